// Store maintenance commands: verify, rm, gc.
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "cli.h"
#include "commands.h"
#include "progress.h"
#include "strata/compiler/gc.h"
#include "strata/compiler/verify.h"
#include "strata/formats/error.h"

namespace po = boost::program_options;

namespace strata {

namespace {

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

void PrintVerifyText(const VerifyReport& r, bool quick) {
  for (const Damage& d : r.damage) {
    printf("damaged %s %s (%s): %s\n", d.kind.c_str(), d.hash.empty() ? "-" : d.hash.c_str(), d.path.c_str(),
           d.problem.c_str());
    printf("  breaks: %s\n", d.variants.empty() ? "no variant (unreferenced)" : Join(d.variants).c_str());
  }
  printf("%s: %llu refs, %llu nodes, %llu blobs (%s)%s\n", r.clean() ? "store ok" : "store damaged",
         static_cast<unsigned long long>(r.refs), static_cast<unsigned long long>(r.nodes),
         static_cast<unsigned long long>(r.blobs), HumanBytes(r.blob_bytes).c_str(),
         quick ? "; --quick: blob sizes checked, bytes not rehashed" : "");
  if (r.clean()) return;
  auto broken = r.BrokenVariants();
  bool bad_ref = std::any_of(r.damage.begin(), r.damage.end(), [](const Damage& d) { return d.kind == "ref"; });
  fprintf(stderr,
          "strata verify: %zu damaged object%s; broken variants: %s.\n"
          "Delete the damaged files listed, then compile the broken variants' plans again (same --name)\n"
          "to rewrite them, or drop them with `strata rm NAME` and `strata gc`.%s\n",
          r.damage.size(), r.damage.size() == 1 ? "" : "s", broken.empty() ? "none" : Join(broken).c_str(),
          bad_ref ? "\nA damaged ref must go first: `strata rm NAME`, then compile its plan again." : "");
}

}  // namespace

int RunVerify(const std::vector<std::string>& args) {
  std::string store_dir;
  VerifyOptions opts;
  bool json = false, quiet = false;
  po::options_description d("options");
  d.add_options()("name", po::value(&opts.names), "variants to check (default: the whole store)")(
      "quick", po::bool_switch(&opts.quick), "check sizes, references and nodes, but do not rehash blobs")(
      "quiet,q", po::bool_switch(&quiet), "no progress bar")("json", po::bool_switch(&json), "print the report as JSON");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("name", -1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata verify [NAME...] [--quick] [--json] [--store DIR]",
             "Checks the store: rehashes every blob (in parallel), checks that every node's bytes hash to\n"
             "its name and parse, that every reference exists with the right kind and size, and that every\n"
             "ref names a variant. With NAMEs, only what those variants reach. Reports each damaged object\n"
             "and the variants it breaks. Exit 0 when clean, 1 on any damage."))
    return 0;
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  ProgressBar bar("verify", !quiet && !json && isatty(STDERR_FILENO));
  opts.on_rehash_start = [&](uint64_t total) { bar.Start(total); };
  opts.bytes_done = bar.counter();
  VerifyReport r = Verify(store, opts);
  bar.Finish();
  if (json) std::cout << r.ToJson(store, opts.quick).dump(2) << "\n";
  else PrintVerifyText(r, opts.quick);
  return r.clean() ? 0 : 1;
}

int RunRm(const std::vector<std::string>& args) {
  std::string store_dir;
  std::vector<std::string> names;
  po::options_description d("options");
  d.add_options()("name", po::value(&names)->required(), "variants to remove");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("name", -1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata rm NAME... [--store DIR]",
             "Removes variant names (refs). Nothing is removed unless every NAME exists. The objects\n"
             "stay until `strata gc` finds that no variant uses them."))
    return 0;
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  RemoveVariants(store, names);
  for (const std::string& n : names) printf("removed %s\n", n.c_str());
  printf("run `strata gc` to free the objects no other variant uses\n");
  return 0;
}

int RunGc(const std::vector<std::string>& args) {
  std::string store_dir;
  GcOptions opts;
  bool json = false;
  po::options_description d("options");
  d.add_options()("dry-run", po::bool_switch(&opts.dry_run), "print what would go and the bytes freed; remove nothing")(
      "grace", po::value(&opts.grace_s), "keep files in tmp/ younger than this many seconds (default 3600)")(
      "json", po::bool_switch(&json), "print the report as JSON");
  AddStoreOption(d, store_dir);
  po::variables_map vm;
  if (!ParseArgs(args, d, {}, vm, "strata gc [--dry-run] [--grace SECONDS] [--json] [--store DIR]",
             "Removes every blob and node no variant reaches, temporaries in tmp/ older than the grace\n"
             "period, and source-cache entries whose blobs are gone. Waits for running compiles."))
    return 0;
  if (opts.grace_s < 0) throw UsageError("--grace must be 0 or more seconds");
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  opts.on_lock_wait = [] { fprintf(stderr, "strata gc: waiting for running compiles (or verify) to finish...\n"); };
  GcReport r = CollectGarbage(store, opts);
  if (json) {
    std::cout << r.ToJson(opts.dry_run).dump(2) << "\n";
    return 0;
  }
  const char* verb = opts.dry_run ? "would remove" : "removed";
  if (opts.dry_run)
    for (const GcRemoved& x : r.removed) printf("%s %s (%s)\n", x.kind.c_str(), x.path.c_str(), HumanBytes(x.bytes).c_str());
  printf("%s %llu blobs (%s), %llu nodes (%s), %llu temporaries (%s): %s freed%s\n", verb,
         static_cast<unsigned long long>(r.blobs), HumanBytes(r.blob_bytes).c_str(),
         static_cast<unsigned long long>(r.nodes), HumanBytes(r.node_bytes).c_str(),
         static_cast<unsigned long long>(r.tmp_files), HumanBytes(r.tmp_bytes).c_str(),
         HumanBytes(r.BytesFreed()).c_str(), opts.dry_run ? " (dry run)" : "");
  printf("kept %llu blobs, %llu nodes; %llu source-cache entries %s\n", static_cast<unsigned long long>(r.kept_blobs),
         static_cast<unsigned long long>(r.kept_nodes), static_cast<unsigned long long>(r.cache_entries),
         opts.dry_run ? "would be dropped" : "dropped");
  return 0;
}

}  // namespace strata
