// When each chunk of a blob was last read or written, in whole seconds of a monotonic clock: the
// cache collector frees the least recently used chunks first, and never one used within its
// keep_recent window (a read the kernel was allowed to make may still be under way).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace rafsd {

class ChunkUse {
public:
    explicit ChunkUse(uint32_t chunks)
        : stamps_(std::make_unique<std::atomic<uint32_t>[]>(chunks)), count_(chunks) {}

    // Seconds since the process started, from 1: 0 means never used.
    static uint32_t now();

    // Chunks [first, end) were used now. Indexes past the end are ignored.
    void touch(uint32_t first, uint32_t end);
    uint32_t last(uint32_t chunk) const {
        return chunk < count_ ? stamps_[chunk].load(std::memory_order_relaxed) : 0;
    }

private:
    std::unique_ptr<std::atomic<uint32_t>[]> stamps_;
    uint32_t count_;
};

}  // namespace rafsd
