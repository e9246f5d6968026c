// How many compressed bytes one prefetch request asks for, adapted to how long the backend took
// for the last ones. A request in flight cannot be taken back: a miss that comes while prefetch
// requests are out waits for what is left of them on a slow link, so there they stay small. Each
// request also costs the backend and rafsd CPU time, so on a fast backend (a registry on the
// loopback) they grow until one takes about the target time: fewer, larger ranges
// (docs/benchmarks.md, bench-network). Starts at the smallest size: the first requests go out at
// the mount, before anything was measured, and a container's first miss comes right after.
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

namespace rafsd {

class PrefetchRangeSize {
public:
    // min, max: bounds of the size; target: how long one request should take.
    PrefetchRangeSize(uint64_t min, uint64_t max, std::chrono::microseconds target);

    uint64_t bytes() const;
    // A prefetch request of `bytes` took `took`: more than twice the target halves the size;
    // less than half of it doubles the size, if the request was at least half the size (a small
    // one says little about a large one).
    void record(uint64_t bytes, std::chrono::microseconds took);

private:
    mutable std::mutex mutex_;
    const uint64_t min_;
    const uint64_t max_;
    const std::chrono::microseconds target_;
    uint64_t bytes_;
};

}  // namespace rafsd
