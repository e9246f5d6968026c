// The fetch threads: a bounded number of backend requests in flight, on-demand work always ahead
// of prefetch work. A queued prefetch task that a reader has come to wait for is on-demand work
// from then on: the reader does not wait behind the other prefetch work. Prefetch of the image's
// prefetch table (a start trace: what the container will read next) holds up to half of the
// threads, misses or not. The rest of prefetch (whole blobs) waits until the table's work is
// done, then holds only a quarter of the threads (at least one), and one while a miss is being
// fetched: a request in flight cannot be taken back, and on a slow link a miss shares the
// bandwidth with every prefetch request out (with eight, the first byte of a program on a
// 100 Mbit/s link came after 0.49 s instead of 0.1 s; with none, a full read on that link
// reached 71% of it instead of 90%: docs/benchmarks.md).
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
    enum class Priority { OnDemand, PrefetchTable, Prefetch };

    // `idle` (optional) runs when the queue has no work queued or running, on the thread whose
    // task ended last: what is worth keeping only while work goes on (buffers) can go there.
    explicit FetchQueue(unsigned threads, std::function<void()> idle = {});
    ~FetchQueue();  // finish()
    // Finishes queued on-demand work (also what that work pushes meanwhile), drops queued prefetch
    // work, and joins the threads. Again, it does nothing.
    void finish();
    // For a stop once nobody waits for queued work: finish() that drops every queued task, on-demand
    // ones too (the requests waiting on them are never completed); only those running end.
    void abandon();
    FetchQueue(const FetchQueue&) = delete;
    FetchQueue& operator=(const FetchQueue&) = delete;

    // `awaited` (prefetch and prefetch-table tasks only; optional): whether a reader waits for the task's work. It
    // is asked under the queue's lock, so it must not call back into the queue. False if the task was
    // dropped (the queue is abandoned): it will never run.
    [[nodiscard]] bool push(Priority priority, std::function<void()> task, std::function<bool()> awaited = {});
    // A reader has come to wait for work that may be a queued prefetch task's: look again.
    void recheck();
    // Prefetch tasks waiting; the prefetcher keeps this small so misses never queue behind it.
    size_t prefetchBacklog() const;

private:
    struct PrefetchTask {
        std::function<void()> run;
        std::function<bool()> awaited;
    };

    void run();
    // Takes the first queued prefetch task a reader waits for; false if none.
    bool takeAwaited(std::function<void()>& task);

    mutable std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::function<void()>> on_demand_;
    std::deque<PrefetchTask> table_;
    std::deque<PrefetchTask> prefetch_;
    unsigned table_limit_ = 1;
    unsigned prefetch_limit_ = 1;
    unsigned running_on_demand_ = 0;
    unsigned running_table_ = 0;
    unsigned running_prefetch_ = 0;
    bool stopping_ = false;
    bool abandoned_ = false;  // abandon(): tasks pushed from now on are dropped too
    std::function<void()> idle_;
    std::vector<std::thread> threads_;
};

}  // namespace rafsd
