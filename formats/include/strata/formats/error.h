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

// Throws Error(what + ": " + strerror(err)).
[[noreturn]] void ThrowErrno(const std::string& what, int err);

}  // namespace strata
