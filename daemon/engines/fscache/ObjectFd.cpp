#include "daemon/engines/fscache/ObjectFd.h"

#include "format/FileIo.h"
#include "daemon/core/Log.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
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

uint64_t objectDataBytes(int anon_fd) {
    uint64_t bytes = 0;
    off_t pos = 0;
    // Each turn moves past one extent of data; a file has far fewer than this.
    for (int extents = 0; extents < (1 << 20); ++extents) {
        const off_t data = ::lseek(anon_fd, pos, SEEK_DATA);
        if (data < 0) {
            // ENXIO: no data from pos on; ENOBUFS: the kernel has not opened the file yet.
            if (errno != ENXIO && errno != ENOBUFS) log::warn("cache size: lseek(SEEK_DATA) of a cache file: {}", std::strerror(errno));
            break;
        }
        const off_t hole = ::lseek(anon_fd, data, SEEK_HOLE);
        if (hole <= data) break;
        bytes += static_cast<uint64_t>(hole - data);
        pos = hole;
    }
    return bytes;
}

}  // namespace rafsd
