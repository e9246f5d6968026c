#include "format/UniqueFd.h"

#include "format/Error.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <utility>

namespace rafs {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
        UniqueFd old(std::exchange(fd_, other.release()));
    }
    return *this;
}

UniqueFd::~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
}

UniqueFd UniqueFd::duplicate(int fd, std::string_view what) {
    UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (copy.get() < 0) failErrno("cannot duplicate the fd of " + std::string(what));
    return copy;
}

int UniqueFd::release() { return std::exchange(fd_, -1); }

void UniqueFd::close(std::string_view what) {
    const int fd = release();
    if (fd >= 0 && ::close(fd) != 0) failErrno("close " + std::string(what));
}

}  // namespace rafs
