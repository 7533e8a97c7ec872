// Model references: local directories and the local HF hub cache.
#include "strata/compiler/resolve.h"

#include <cstdlib>
#include <filesystem>

#include "strata/formats/error.h"
#include "strata/formats/file.h"
#include "strata/formats/gguf.h"

namespace strata {

namespace fs = std::filesystem;

std::string HfHubCacheDir() {
  if (const char* c = std::getenv("HF_HUB_CACHE"); c && *c) return c;
  if (const char* h = std::getenv("HF_HOME"); h && *h) return std::string(h) + "/hub";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.cache/huggingface/hub";
}

namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

ResolvedModel ResolveModel(const std::string& ref) {
  std::vector<std::string> looked;
  if (IsGgufPath(ref)) {
    if (fs::is_regular_file(ref)) return ResolvedModel{ref, fs::absolute(ref).lexically_normal().string(), ""};
    throw Error("model \"" + ref + "\" names a GGUF file, but " +
                (fs::exists(ref) ? "it is not a regular file" : "there is no such file") + " (relative paths are "
                "from the working directory, " + fs::current_path().string() + ")");
  }
  if (fs::is_directory(ref)) return ResolvedModel{ref, fs::absolute(ref).lexically_normal().string(), ""};
  looked.push_back(ref + " (not a local directory)");

  std::string id = ref, rev = "main";
  if (auto at = ref.rfind('@'); at != std::string::npos) {
    id = ref.substr(0, at);
    rev = ref.substr(at + 1);
  }
  std::string cache = HfHubCacheDir();
  std::string repo = "models--" + id;
  for (size_t p = 0; (p = repo.find('/', p)) != std::string::npos;) repo.replace(p, 1, "--");
  std::string base = cache + "/" + repo;
  if (id.find('/') != std::string::npos && !id.empty() && rev.find('/') == std::string::npos) {
    std::string snap = base + "/snapshots/" + rev;
    if (fs::is_directory(snap)) return ResolvedModel{ref, snap, rev};
    std::string ref_file = base + "/refs/" + rev;
    if (FileExists(ref_file)) {
      std::string commit = Trim(ReadFile(ref_file));
      std::string dir = base + "/snapshots/" + commit;
      if (fs::is_directory(dir)) return ResolvedModel{ref, dir, commit};
      looked.push_back(ref_file + " names snapshot " + commit + ", but " + dir + " does not exist");
    } else {
      looked.push_back((fs::is_directory(base) ? ref_file : base) + " (not found)");
    }
  }
  std::string msg = "model \"" + ref + "\" was not found; strata never downloads. Looked at:";
  for (const auto& l : looked) msg += "\n  " + l;
  msg += "\nDownload it into the HF cache first (e.g. `huggingface-cli download " + id +
         "`), set HF_HUB_CACHE, or give a local directory.";
  throw Error(msg);
}

}  // namespace strata
