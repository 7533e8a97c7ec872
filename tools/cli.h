// Command-line plumbing shared by every strata command.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "strata/formats/store.h"

namespace strata {

// Adds --help, parses `args` against `desc` and the positionals. Prints the
// usage line, `about` and the options and returns false on --help; returns
// true when the command should run. Throws boost::program_options::error on a
// bad command line and UsageError on an explicitly empty --store (exit code 2).
bool ParseArgs(const std::vector<std::string>& args, boost::program_options::options_description& desc,
               const boost::program_options::positional_options_description& pos,
               boost::program_options::variables_map& vm, const char* usage, const char* about);
// Adds --store DIR, read into `store`.
void AddStoreOption(boost::program_options::options_description& d, std::string& store);
// --threads: throws UsageError when `threads` is negative (0: all cores).
void CheckThreads(int threads);
// A progress bar is drawn only on a terminal and never with --quiet or --json.
bool ShowProgress(bool quiet);
// Pretty-printed JSON on stdout.
void PrintJson(const Json& j);

}  // namespace strata
