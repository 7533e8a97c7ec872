// Command-line plumbing shared by every strata command.
#include "cli.h"

#include <unistd.h>

#include <iostream>

#include "commands.h"

namespace po = boost::program_options;

namespace strata {

bool ParseArgs(const std::vector<std::string>& args, po::options_description& desc,
               const po::positional_options_description& pos, po::variables_map& vm, const char* usage,
               const char* about) {
  desc.add_options()("help,h", "show this help");
  po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: " << usage << "\n\n" << about << "\n\n" << desc << "\n";
    return false;
  }
  // An empty --store (an unset variable in a script) would otherwise mean the
  // default store: the wrong one, silently.
  if (vm.count("store") && vm["store"].as<std::string>().empty())
    throw UsageError("--store is empty: give a directory, or leave --store out to use $STRATA_STORE / "
                     "~/.cache/strata");
  po::notify(vm);
  return true;
}

void AddStoreOption(po::options_description& d, std::string& store) {
  d.add_options()("store", po::value(&store), "store directory (default: $STRATA_STORE, else ~/.cache/strata)");
}

void CheckThreads(int threads) {
  if (threads < 0)
    throw UsageError("--threads must be >= 0 (0: all cores), got " + std::to_string(threads));
}

bool ShowProgress(bool quiet) { return !quiet && isatty(STDERR_FILENO); }

void PrintJson(const Json& j) { std::cout << j.dump(2) << "\n"; }

}  // namespace strata
