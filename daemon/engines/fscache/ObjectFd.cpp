#include "daemon/engines/fscache/ObjectFd.h"

#include "builder/format/Error.h"
#include "daemon/core/UniqueFd.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>

namespace rafsd {

AnonFd::~AnonFd() { closeOrWarn(fd_, "cachefiles anonymous fd"); }

void ObjectFd::attach(std::shared_ptr<AnonFd> fd) {
    std::unique_lock lock(mutex_);
    fd_ = std::move(fd);
}

void ObjectFd::detach(const AnonFd& fd) {
    std::unique_lock lock(mutex_);
    if (fd_.get() == &fd) fd_.reset();
}

std::shared_ptr<AnonFd> ObjectFd::current() const {
    std::shared_lock lock(mutex_);
    return fd_;
}

void writeToObject(int anon_fd, const uint8_t* data, uint64_t length, uint64_t offset, std::string_view what) {
    while (length > 0) {
        const ssize_t n = ::pwrite(anon_fd, data, length, static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            rafs::failErrno(fmt::format("{}: write of {} bytes at {}", what, length, offset));
        }
        if (n == 0) rafs::fail("{}: write of {} bytes at {} wrote nothing", what, length, offset);
        const auto done = std::min(static_cast<uint64_t>(n), length);
        data += done;
        offset += done;
        length -= done;
    }
}

}  // namespace rafsd
