#include "daemon/core/RepeatedFailureLog.h"

namespace rafsd {

std::optional<uint64_t> RepeatedFailureLog::admit(Clock::time_point now) {
    std::lock_guard lock(mutex_);
    if (last_logged_ && now - *last_logged_ < interval_) {
        ++held_back_;
        return std::nullopt;
    }
    last_logged_ = now;
    const uint64_t held_back = held_back_;
    held_back_ = 0;
    return held_back;
}

}  // namespace rafsd
