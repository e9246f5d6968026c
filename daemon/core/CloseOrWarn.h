// Closes an fd owned elsewhere (an event's fd, a device fd handed over); a failure is logged
// naming `what`, since nothing written through these fds depends on close().
#pragma once

#include <string_view>

namespace rafsd {

void closeOrWarn(int fd, std::string_view what);

}  // namespace rafsd
