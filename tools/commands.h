// One function per strata command; each parses its own options.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace strata {

// A command line that cannot be understood: exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

int RunCompile(const std::vector<std::string>& args);
int RunExport(const std::vector<std::string>& args);
int RunSynth(const std::vector<std::string>& args);
int RunLs(const std::vector<std::string>& args);
int RunShow(const std::vector<std::string>& args);
int RunDu(const std::vector<std::string>& args);
int RunDemo(const std::vector<std::string>& args);

}  // namespace strata
