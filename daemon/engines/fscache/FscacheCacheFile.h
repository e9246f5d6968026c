// A blob's cache file as the kernel's cachefiles object: written through the object's anonymous
// fd (direct I/O in the kernel, hence CacheFile's alignment contract), which the fscache engine
// attaches on OPEN and detaches on CLOSE. Writes while detached throw.
#pragma once

#include "daemon/core/CacheFile.h"
#include "daemon/engines/fscache/ObjectFd.h"

#include <memory>
#include <string>

namespace rafsd {

class FscacheCacheFile final : public CacheFile {
public:
    FscacheCacheFile(std::string name, uint64_t size, std::shared_ptr<ObjectFd> fd)
        : name_(std::move(name)), size_(size), fd_(std::move(fd)) {}

    std::string name() const override { return name_; }
    uint64_t size() const override { return size_; }
    // SEEK_DATA/SEEK_HOLE through the anonymous fd (it forwards llseek to the cache file); true
    // while detached, since nothing can be known then.
    bool hasData(uint64_t offset, uint64_t length) const override;
    // The kernel owns the file; its data is as durable as cachefiles makes it.
    void sync() override {}
    bool writable() const override { return fd_->current() != nullptr; }

private:
    void writeBlocks(uint64_t offset, std::span<const uint8_t> data) override;

    std::string name_;
    uint64_t size_;
    std::shared_ptr<ObjectFd> fd_;
};

}  // namespace rafsd
