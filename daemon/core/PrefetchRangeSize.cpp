#include "daemon/core/PrefetchRangeSize.h"

#include <algorithm>

namespace rafsd {

PrefetchRangeSize::PrefetchRangeSize(uint64_t min, uint64_t max, std::chrono::microseconds target)
    : min_(std::max<uint64_t>(min, 1)), max_(std::max(max, min_)), target_(target), bytes_(min_) {}

uint64_t PrefetchRangeSize::bytes() const {
    std::lock_guard lock(mutex_);
    return bytes_;
}

void PrefetchRangeSize::record(uint64_t bytes, std::chrono::microseconds took) {
    std::lock_guard lock(mutex_);
    if (took > 2 * target_) {
        bytes_ = std::max(min_, bytes_ / 2);
    } else if (took < target_ / 2 && bytes >= bytes_ / 2) {
        bytes_ = std::min(max_, bytes_ * 2);
    }
}

}  // namespace rafsd
