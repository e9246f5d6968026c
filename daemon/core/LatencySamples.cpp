#include "daemon/core/LatencySamples.h"

#include <algorithm>
#include <limits>

namespace rafsd {

void LatencySamples::add(std::chrono::microseconds latency) {
    const auto us = static_cast<uint32_t>(std::clamp<int64_t>(latency.count(), 0, std::numeric_limits<uint32_t>::max()));
    std::lock_guard lock(mutex_);
    if (samples_us_.size() < kMaxSamples) samples_us_.push_back(us);
}

uint64_t LatencySamples::percentileUs(unsigned p) const {
    std::vector<uint32_t> samples;
    {
        std::lock_guard lock(mutex_);
        samples = samples_us_;
    }
    if (samples.empty()) return 0;
    const size_t at = (samples.size() - 1) * std::min(p, 100u) / 100;
    std::nth_element(samples.begin(), samples.begin() + static_cast<ptrdiff_t>(at), samples.end());
    return samples[at];
}

}  // namespace rafsd
