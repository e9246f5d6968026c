// The one exception type of librafs and its tools: a message that names what is wrong, meant to be
// printed as a single line by the command that catches it.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace rafs {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A failed system call: the message as for Error, and the errno, for callers that act on it (a
// full disk makes rafsd free cache space and try again).
class SystemError : public Error {
public:
    SystemError(const std::string& message, int code) : Error(message), code_(code) {}
    int code() const { return code_; }

private:
    int code_;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
    throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// A string as messages show it: in quotes, with control characters escaped, so that a name from
// an input (a path, a config value) cannot break the message's one line.
std::string quote(std::string_view text);

// Throws SystemError("<what>: <strerror(errno)>", errno), for failed system calls.
[[noreturn]] void failErrno(std::string_view what);
[[noreturn]] void failErrno(std::string_view what, int err);

}  // namespace rafs
