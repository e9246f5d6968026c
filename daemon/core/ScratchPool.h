// Scratch buffers shared by the fetch threads: a run leases a set and gives it back when done, and
// the sets are trimmed only once no run is in flight. With one set per thread trimmed after each
// run, every prefetch run of up to 8 MiB faulted its buffer in afresh, one page fault per 4 KiB:
// twice the page faults in a full read of the corpus, and about a tenth more of rafsd's CPU
// (docs/benchmarks.md). A lease takes the set given back last, whose pages are resident.
//
// Thread-safety: take() and trim() from any thread; a lease is used by one thread at a time.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace rafsd {

// Buffers: default-constructible, with trim(size_t keep) (see ScratchBuffer).
template <class Buffers>
class ScratchPool {
public:
    class Lease {
    public:
        Lease(ScratchPool& pool, std::unique_ptr<Buffers> buffers) : pool_(pool), buffers_(std::move(buffers)) {}
        ~Lease() { pool_.giveBack(std::move(buffers_)); }
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        Buffers* operator->() const { return buffers_.get(); }
        Buffers& operator*() const { return *buffers_; }

    private:
        ScratchPool& pool_;
        std::unique_ptr<Buffers> buffers_;
    };

    Lease take() {
        std::unique_ptr<Buffers> buffers;
        {
            std::lock_guard lock(mutex_);
            if (!spare_.empty()) {
                buffers = std::move(spare_.back());
                spare_.pop_back();
            }
        }
        return Lease(*this, buffers ? std::move(buffers) : std::make_unique<Buffers>());
    }

    // Shrinks every set not leased to `keep` bytes per buffer.
    void trim(size_t keep) {
        std::lock_guard lock(mutex_);
        for (auto& b : spare_) b->trim(keep);
    }

private:
    void giveBack(std::unique_ptr<Buffers> buffers) {
        std::lock_guard lock(mutex_);
        spare_.push_back(std::move(buffers));
    }

    std::mutex mutex_;
    std::vector<std::unique_ptr<Buffers>> spare_;
};

}  // namespace rafsd
