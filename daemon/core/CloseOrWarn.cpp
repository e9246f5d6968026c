#include "daemon/core/CloseOrWarn.h"

#include "daemon/core/Log.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rafsd {

void closeOrWarn(int fd, std::string_view what) {
    if (::close(fd) != 0) log::warn("close {}: {}", what, std::strerror(errno));
}

}  // namespace rafsd
