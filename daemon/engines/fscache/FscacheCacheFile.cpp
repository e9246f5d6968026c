#include "daemon/engines/fscache/FscacheCacheFile.h"

#include <unistd.h>

#include <cerrno>

namespace rafsd {

bool FscacheCacheFile::hasData(uint64_t offset, uint64_t length) const {
    const std::shared_ptr<AnonFd> fd = fd_->current();
    if (!fd || length == 0) return true;
    const off_t data = ::lseek(fd->get(), static_cast<off_t>(offset), SEEK_DATA);
    if (data < 0) return errno != ENXIO;  // ENXIO: no data from offset on; else cannot tell
    if (static_cast<uint64_t>(data) > offset) return false;
    const off_t hole = ::lseek(fd->get(), static_cast<off_t>(offset), SEEK_HOLE);
    if (hole < 0) return true;
    return static_cast<uint64_t>(hole) >= offset + length;
}

void FscacheCacheFile::writeBlocks(uint64_t offset, std::span<const uint8_t> data) {
    const std::shared_ptr<AnonFd> fd = fd_->current();
    if (!fd) rafs::fail("{}: the kernel has not opened this blob (no cachefiles object)", name_);
    writeToObject(fd->get(), data.data(), data.size(), offset, name_);
}

}  // namespace rafsd
