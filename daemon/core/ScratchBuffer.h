// A reusable, 4 KiB-aligned byte buffer that is never zero-filled. Each fetch thread keeps one for
// fetched bytes and one for decoded chunks, so a chunk costs no allocation and no page faults on
// fresh memory; the alignment is what cache-file writes need (direct I/O in fscache mode).
//
// Thread-safety: none; one buffer per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>

namespace rafsd {

class ScratchBuffer {
public:
    static constexpr size_t kAlignment = 4096;

    // `size` bytes of uninitialised memory; what the buffer held is lost when it has to grow.
    std::span<uint8_t> get(size_t size) {
        if (size > capacity_) {
            data_.reset();
            capacity_ = 0;
            data_.reset(new (std::align_val_t{kAlignment}) uint8_t[size]);
            capacity_ = size;
        }
        return {data_.get(), size};
    }

    // Frees the memory when it holds more than `keep` bytes, so one large run does not keep it
    // resident for good.
    void trim(size_t keep) {
        if (capacity_ <= keep) return;
        data_.reset();
        capacity_ = 0;
    }

private:
    struct AlignedDelete {
        void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{kAlignment}); }
    };
    std::unique_ptr<uint8_t[], AlignedDelete> data_;
    size_t capacity_ = 0;
};

}  // namespace rafsd
