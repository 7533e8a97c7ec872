// strata materialize: parses options, runs MaterializeVariant, prints the result.
#include <cstdio>

#include "cli.h"
#include "commands.h"
#include "progress.h"
#include "strata/compiler/materialize.h"
#include "strata/formats/error.h"

namespace po = boost::program_options;

namespace strata {

int RunMaterialize(const std::vector<std::string>& args) {
  std::vector<std::string> names;
  std::string store_dir;
  MaterializeOptions opts;
  bool quiet = false, json = false;
  po::options_description d("options");
  d.add_options()("name", po::value(&names)->required(), "variants to materialize")(
      "recompute", po::bool_switch(&opts.recompute), "compute again what is materialized already")(
      "quiet,q", po::bool_switch(&quiet), "no progress bar")("json", po::bool_switch(&json), "print the result as JSON");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("name", -1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata materialize NAME...",
                 "A merged variant (slerp, TIES, linear, ...) is stored as recipes: a few kilobytes of nodes\n"
                 "naming its sources. Every load computes them (export, run, serve, eval, bench), into\n"
                 "memory of its own. `materialize` computes each distinct merged, cast or scaled tensor\n"
                 "once and stores its bytes as a blob: loads then map it from the page cache like a\n"
                 "plain checkpoint (less host memory, faster loads), and export copies it. The variant\n"
                 "itself is unchanged (same hashes: diff, show and verify see the recipe); the blobs\n"
                 "stay while a variant uses them, and `strata gc` removes them after `strata rm`.\n"
                 "Costs the merged tensors' bytes on disk, once per distinct tensor."))
    return 0;
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  Json out = Json::array();
  for (const std::string& name : names) {
    ProgressBar bar("materialize " + name, ShowProgress(quiet || json), "bytes");
    opts.on_start = [&](uint64_t total) { bar.Start(total); };
    opts.bytes_done = bar.counter();
    const MaterializeStats s = MaterializeVariant(store, name, opts);
    bar.Finish();
    if (json) {
      out.push_back(Json{{"name", s.name},
                         {"variant", s.variant.Hex()},
                         {"tensors", s.tensors},
                         {"derived", s.derived},
                         {"computed", s.computed},
                         {"cached", s.cached},
                         {"bytes", s.bytes},
                         {"blobs_written", s.blobs_written},
                         {"blob_bytes_written", s.blob_bytes_written},
                         {"seconds", s.seconds}});
      continue;
    }
    if (s.derived == 0) {
      printf("%s: nothing to materialize (its %llu tensors are stored bytes already)\n", s.name.c_str(),
             static_cast<unsigned long long>(s.tensors));
      continue;
    }
    printf("materialized %s: %llu of %llu computed tensors now (%llu already), %s stored in %llu new blobs, %.1f s\n",
           s.name.c_str(), static_cast<unsigned long long>(s.computed), static_cast<unsigned long long>(s.derived),
           static_cast<unsigned long long>(s.cached), HumanBytes(s.blob_bytes_written).c_str(),
           static_cast<unsigned long long>(s.blobs_written), s.seconds);
  }
  if (json) PrintJson(Json{{"store", store.root()}, {"results", out}});
  return 0;
}

}  // namespace strata
