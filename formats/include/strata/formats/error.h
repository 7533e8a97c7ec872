// The one exception type strata throws for conditions a user can act on.
#pragma once

#include <stdexcept>
#include <string>

namespace strata {

// Thrown with a message that names the object, expected versus actual, and
// what to do. Only tools/ prints it and chooses the exit code.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A long operation stopped by a signal (SIGINT, SIGTERM, SIGHUP) between two
// reads or writes, after RequestInterrupt(): unwinding removes what it wrote.
class Interrupted : public Error {
 public:
  explicit Interrupted(int signal) : Error("interrupted by signal " + std::to_string(signal)), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

// Throws Error(what + ": " + strerror(err)).
[[noreturn]] void ThrowErrno(const std::string& what, int err);

}  // namespace strata
