#include "registry/TransferStats.h"

#include <algorithm>

namespace registry {

void TransferStats::recordLatency(std::chrono::microseconds latency) {
    const auto us = static_cast<uint64_t>(std::max<int64_t>(0, latency.count()));
    std::lock_guard lock(mutex_);
    if (samples_.size() < kWindow) {
        samples_.push_back(us);
    } else {
        samples_[next_] = us;
        next_ = (next_ + 1) % kWindow;
    }
}

TransferStats::Percentiles TransferStats::latency() const {
    std::vector<uint64_t> sorted;
    {
        std::lock_guard lock(mutex_);
        sorted = samples_;
    }
    if (sorted.empty()) return {};
    std::ranges::sort(sorted);
    auto at = [&](size_t percent) { return sorted[(sorted.size() - 1) * percent / 100]; };
    return {at(50), at(99)};
}

}  // namespace registry
