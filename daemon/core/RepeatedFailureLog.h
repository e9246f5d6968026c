// One log line per interval for a failure that repeats: a backend that is down, or a blob that is
// gone, fails every read of the blob, and a line per failed read would bury everything else.
// The first failure is logged; those in the next `interval` are only counted, and the count goes
// with the next line logged.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace rafsd {

class RepeatedFailureLog {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr Clock::duration kInterval = std::chrono::seconds(10);

    explicit RepeatedFailureLog(Clock::duration interval = kInterval) : interval_(interval) {}

    // Counts a failure at `now`. Returns how many failures were held back since the last line if
    // this one is to be logged, nothing if it is only counted. Thread-safe.
    std::optional<uint64_t> admit(Clock::time_point now = Clock::now());
    // The end of the line logged: " (and N more WHAT since the last of these lines)", or nothing
    // if none was held back.
    static std::string heldBack(uint64_t held_back, std::string_view what);

private:
    std::mutex mutex_;
    Clock::duration interval_;
    std::optional<Clock::time_point> last_logged_;
    uint64_t held_back_ = 0;
};

}  // namespace rafsd
