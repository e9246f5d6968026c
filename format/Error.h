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

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
    throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Throws Error("<what>: <strerror(errno)>"), for failed system calls.
[[noreturn]] void failErrno(std::string_view what);
[[noreturn]] void failErrno(std::string_view what, int err);

}  // namespace rafs
