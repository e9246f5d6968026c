// Waits for several DataPlane completions at once: each add() returns a Completion that counts
// until it is called. Each completion holds the count, so one that comes after its waiter gave up
// (waitUntil's deadline) finds it still there.
#pragma once

#include "daemon/core/DataPlane.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>

namespace rafsd {

class CompletionCount : public std::enable_shared_from_this<CompletionCount> {
public:
    static std::shared_ptr<CompletionCount> make() { return std::shared_ptr<CompletionCount>(new CompletionCount()); }

    // A completion to pass on. Counted once, however often it is called (a caller that completes
    // it on an exception may not know whether the callee had already).
    Completion add() {
        {
            std::lock_guard lock(mutex_);
            ++left_;
        }
        return once([self = shared_from_this()](int error) { self->complete(error); });
    }

    // Until every completion added has been called.
    void wait() {
        std::unique_lock lock(mutex_);
        all_.wait(lock, [this] { return left_ == 0; });
    }

    // Whether every completion added was called by `deadline`.
    bool waitUntil(std::chrono::steady_clock::time_point deadline) {
        std::unique_lock lock(mutex_);
        return all_.wait_until(lock, deadline, [this] { return left_ == 0; });
    }

    // Whether one was called with an error.
    bool failed() {
        std::lock_guard lock(mutex_);
        return failed_;
    }

private:
    CompletionCount() = default;

    void complete(int error) {
        std::lock_guard lock(mutex_);
        if (error != 0) failed_ = true;
        if (--left_ == 0) all_.notify_all();
    }

    std::mutex mutex_;
    std::condition_variable all_;
    size_t left_ = 0;
    bool failed_ = false;
};

}  // namespace rafsd
