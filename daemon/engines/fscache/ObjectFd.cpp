#include "daemon/engines/fscache/ObjectFd.h"

#include "format/FileIo.h"

#include <mutex>

namespace rafsd {

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
    // A return past what was asked (page-rounded, before 6.13) ends the loop like an exact one.
    rafs::pwriteAll(anon_fd, std::span(data, length), offset, what);
}

}  // namespace rafsd
