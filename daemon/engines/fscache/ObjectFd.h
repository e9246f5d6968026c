// The anonymous fds cachefiles hands out with each OPEN (include/uapi/linux/cachefiles.h): the
// one way to write into the kernel's cache file of an object, and to complete its READs.
#pragma once

#include "format/UniqueFd.h"

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string_view>

namespace rafsd {

// An anonymous fd from an OPEN; closed when the last holder (object table, cache file, pending
// READ completion) lets go, so a completion never ioctls a reused fd number.
using AnonFd = rafs::UniqueFd;

// The anonymous fd of one blob's object as it comes and goes: attached on OPEN, detached on CLOSE.
// The engine attaches and detaches; the blob's cache file (FscacheCacheFile) writes through it.
// Thread-safe.
class ObjectFd {
public:
    void attach(std::shared_ptr<AnonFd> fd);
    void detach(const AnonFd& fd);  // only if `fd` is the attached one (an older OPEN's CLOSE)
    // The attached fd, or null; holding it keeps the fd open.
    std::shared_ptr<AnonFd> current() const;

private:
    mutable std::shared_mutex mutex_;
    std::shared_ptr<AnonFd> fd_;
};

// pwrite through an anonymous fd, all of `length`. Before 6.13 it returned the page-rounded
// length, so more than asked for is success too. Throws rafs::Error naming `what`.
void writeToObject(int anon_fd, const uint8_t* data, uint64_t length, uint64_t offset, std::string_view what);

// The bytes of data (not holes) in the cache file behind an anonymous fd, by SEEK_DATA/SEEK_HOLE:
// 0 when the file cannot be asked (the kernel has not opened it yet: ENOBUFS).
uint64_t objectDataBytes(int anon_fd);

}  // namespace rafsd
