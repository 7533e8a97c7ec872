// Turning a command-line name into a variant: a name in the store, or an HF
// model directory compiled on the fly (shared by run and diff).
#include <cctype>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "strata/compiler/compile.h"

namespace fs = std::filesystem;

namespace strata {

// An HF directory becomes a variant of its own in the store ("models:" plan
// over the directory), named after it; compiling again is a no-op, and the
// source cache makes it cheap: unchanged files are not re-read. The plan text
// names only the absolute directory, so every spelling of it (and every
// command) gives the same variant.
Hash VariantFor(Store& store, const std::string& name_or_dir, bool verbose) {
  if (!fs::is_directory(name_or_dir) || !fs::exists(fs::path(name_or_dir) / "config.json"))
    return store.ResolveRef(name_or_dir);
  std::string dir = fs::absolute(name_or_dir).lexically_normal().string();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::string text = "# compiled by strata from the directory " + dir + "\nmodels:\n  - model: \"" + dir +
                     "\"\nmerge_method: passthrough\n";
  std::string name = "dir-" + fs::path(dir).filename().string() + "-" + HashBytes(dir).Hex().substr(0, 8);
  for (char& c : name)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  CompileOptions opts;
  opts.name = name;
  opts.force = true;  // the directory's content may have changed: the name follows it
  CompileStats s = Compile(store, ParsePlan(text, dir), opts);
  if (verbose) fprintf(stderr, "compiled %s as variant %s (read %llu bytes)\n", dir.c_str(), name.c_str(),
                       static_cast<unsigned long long>(s.bytes_read));
  return s.variant;
}

}  // namespace strata
