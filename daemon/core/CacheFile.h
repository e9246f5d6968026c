// A blob's cache file: the blob's uncompressed address space, which the kernel reads on its own
// and rafsd fills on demand. The fanotify engine owns a sparse file (SparseCacheFile); the fscache
// engine writes through the anonymous fd the kernel hands out, which does direct I/O — hence the
// alignment contract below, enforced here for every implementation so that code tested against
// one engine cannot break the other.
#pragma once

#include "format/Error.h"

#include <cstdint>
#include <span>
#include <string>

namespace rafsd {

class CacheFile {
public:
    static constexpr uint64_t kBlockSize = 4096;

    virtual ~CacheFile() = default;

    // For messages: the file's path, or how the kernel's object is known.
    virtual std::string name() const = 0;

    // The blob's uncompressed size; the file itself spans size() rounded up to kBlockSize.
    virtual uint64_t size() const = 0;

    // Writes `data` at `offset`. Contract (throws Error when broken): data.data() is
    // kBlockSize-aligned, offset and data.size() are multiples of kBlockSize, and the write ends
    // at or before size() rounded up to kBlockSize (so the blob's last block is written whole,
    // zero-padded). Thread-safe for disjoint ranges.
    void write(uint64_t offset, std::span<const uint8_t> data) {
        const auto address = reinterpret_cast<uintptr_t>(data.data());
        if (address % kBlockSize != 0 || offset % kBlockSize != 0 || data.size() % kBlockSize != 0)
            rafs::fail("{}: write of {} bytes at offset {} is not {}-byte aligned (buffer, offset "
                       "and length must be)",
                       name(), data.size(), offset, kBlockSize);
        const uint64_t end = (size() + kBlockSize - 1) / kBlockSize * kBlockSize;
        if (offset > end || data.size() > end - offset)
            rafs::fail("{}: write of {} bytes at offset {} ends past the cache file's end {}",
                       name(), data.size(), offset, end);
        writeBlocks(offset, data);
    }

    // Best effort (SEEK_DATA/SEEK_HOLE): false if some byte of [offset, offset + length) is known
    // to be a hole, true otherwise — also when the file system cannot tell. Used to drop
    // readiness bits whose data did not survive a crash.
    virtual bool hasData(uint64_t offset, uint64_t length) const = 0;

    // Whether write() can work now: false for a cachefiles object the kernel has not opened (an
    // image registered for a mount by hand, or after a failover until the blob is read again).
    virtual bool writable() const { return true; }

    // Whether discard() works here: on a file rafsd owns (SparseCacheFile). The kernel's cachefiles
    // objects cannot have ranges freed by rafsd; they are removed whole once no image uses them.
    virtual bool canDiscard() const { return false; }

    // Frees [offset, offset + length), both multiples of kBlockSize, so the range reads as a hole
    // (and takes no space) until written again. Throws Error when the file cannot.
    virtual void discard(uint64_t offset, uint64_t length) {
        rafs::fail("{}: cannot free {} bytes at offset {}: the kernel owns this cache file", name(), length, offset);
    }

    // Makes the written data durable, so readiness bits persisted afterwards never claim data a
    // crash could lose. Implementations whose writes are already durable may do nothing.
    virtual void sync() = 0;

private:
    // write() after its contract checks.
    virtual void writeBlocks(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace rafsd
