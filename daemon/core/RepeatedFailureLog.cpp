#include "daemon/core/RepeatedFailureLog.h"

#include <fmt/format.h>

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

std::string RepeatedFailureLog::heldBack(uint64_t held_back, std::string_view what) {
    if (held_back == 0) return {};
    return fmt::format(" (and {} more {} since the last of these lines)", held_back, what);
}

}  // namespace rafsd
