// The fetch threads: a bounded number of backend requests in flight, on-demand work always ahead
// of prefetch work. Prefetch also holds only a quarter of the threads (at least one), and one
// while a miss is being fetched: a request in flight cannot be taken back, and on a slow link a
// miss shares the bandwidth with every prefetch request already out (with eight, the first byte
// of a program on a 100 Mbit/s link came after 0.49 s instead of 0.1 s: docs/benchmarks.md).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rafsd {

class FetchQueue {
public:
    enum class Priority { OnDemand, Prefetch };

    explicit FetchQueue(unsigned threads);
    ~FetchQueue();  // finishes queued on-demand work, drops queued prefetch work, joins
    FetchQueue(const FetchQueue&) = delete;
    FetchQueue& operator=(const FetchQueue&) = delete;

    void push(Priority priority, std::function<void()> task);
    // Prefetch tasks waiting; the prefetcher keeps this small so misses never queue behind it.
    size_t prefetchBacklog() const;

private:
    void run();

    mutable std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::function<void()>> on_demand_;
    std::deque<std::function<void()>> prefetch_;
    unsigned prefetch_limit_ = 1;
    unsigned running_on_demand_ = 0;
    unsigned running_prefetch_ = 0;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace rafsd
