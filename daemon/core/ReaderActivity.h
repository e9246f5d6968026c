// Whether readers are using the images now: when one last asked the data plane for a range, and
// how many wait for a miss. Background work that would compete with a container's start for the
// CPU and the link asks it whether the readers have gone quiet. Thread-safe, lock-free.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace rafsd {

class ReaderActivity {
public:
    using Clock = std::chrono::steady_clock;

    // A reader asked for a range (hit or miss) at `when`.
    void asked(Clock::time_point when = Clock::now()) {
        last_.store(when.time_since_epoch().count(), std::memory_order_relaxed);
    }
    // A reader waits for a miss; waitEnded() when it is answered (which counts as asking).
    void waitBegan() { waiting_.fetch_add(1, std::memory_order_relaxed); }
    void waitEnded() {
        waiting_.fetch_sub(1, std::memory_order_relaxed);
        asked();
    }

    // No reader waits, and none asked for anything during the last `period`.
    bool quietFor(Clock::duration period) const {
        if (waiting_.load(std::memory_order_relaxed) > 0) return false;
        const Clock::rep last = last_.load(std::memory_order_relaxed);
        return Clock::now().time_since_epoch().count() - last >= period.count();
    }

private:
    std::atomic<Clock::rep> last_{0};
    std::atomic<int64_t> waiting_{0};
};

}  // namespace rafsd
