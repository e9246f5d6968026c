#include "format/Error.h"

#include <cerrno>
#include <cstring>

namespace rafs {

void failErrno(std::string_view what) { failErrno(what, errno); }

void failErrno(std::string_view what, int err) {
    throw SystemError(fmt::format("{}: {}", what, std::strerror(err)), err);
}

}  // namespace rafs
