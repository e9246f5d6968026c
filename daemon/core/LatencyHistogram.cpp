#include "daemon/core/LatencyHistogram.h"

#include <algorithm>

namespace rafsd {

void LatencyHistogram::add(std::chrono::microseconds latency) {
    const auto us = static_cast<uint64_t>(std::max<int64_t>(latency.count(), 0));
    const auto bound = std::lower_bound(kBoundsUs.begin(), kBoundsUs.end(), us);
    buckets_[static_cast<size_t>(bound - kBoundsUs.begin())].fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(us, std::memory_order_relaxed);
}

LatencyHistogram::Snapshot LatencyHistogram::snapshot() const {
    Snapshot s;
    uint64_t running = 0;
    for (size_t i = 0; i < kBoundsUs.size(); ++i) {
        running += buckets_[i].load(std::memory_order_relaxed);
        s.cumulative[i] = running;
    }
    s.count = running + buckets_[kBoundsUs.size()].load(std::memory_order_relaxed);
    s.sum_us = sum_us_.load(std::memory_order_relaxed);
    return s;
}

}  // namespace rafsd
