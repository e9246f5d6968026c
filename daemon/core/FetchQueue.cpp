#include "daemon/core/FetchQueue.h"

namespace rafsd {

FetchQueue::FetchQueue(unsigned threads) : prefetch_limit_(std::max(1u, threads / 4)) {
    for (unsigned i = 0; i < std::max(1u, threads); ++i) threads_.emplace_back([this] { run(); });
}

FetchQueue::~FetchQueue() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        prefetch_.clear();
    }
    ready_.notify_all();
    for (auto& t : threads_) t.join();
}

void FetchQueue::push(Priority priority, std::function<void()> task) {
    {
        std::lock_guard lock(mutex_);
        (priority == Priority::OnDemand ? on_demand_ : prefetch_).push_back(std::move(task));
    }
    ready_.notify_one();
}

size_t FetchQueue::prefetchBacklog() const {
    std::lock_guard lock(mutex_);
    return prefetch_.size();
}

void FetchQueue::run() {
    std::unique_lock lock(mutex_);
    auto may_prefetch = [this] {
        return !prefetch_.empty() && !stopping_ && running_prefetch_ < (running_on_demand_ > 0 ? 1u : prefetch_limit_);
    };
    for (;;) {
        ready_.wait(lock, [&] { return stopping_ || !on_demand_.empty() || may_prefetch(); });
        std::function<void()> task;
        unsigned* running = nullptr;
        if (!on_demand_.empty()) {
            task = std::move(on_demand_.front());
            on_demand_.pop_front();
            running = &running_on_demand_;
        } else if (may_prefetch()) {
            task = std::move(prefetch_.front());
            prefetch_.pop_front();
            running = &running_prefetch_;
        } else if (stopping_) {
            return;  // queued on-demand work is done; queued prefetch work was dropped
        } else {
            continue;
        }
        ++*running;
        lock.unlock();
        task();
        lock.lock();
        --*running;
        // A prefetch slot opened (a prefetch ended, or the last miss did and the limit rose):
        // a thread waiting only for that one may go now.
        if (!prefetch_.empty() && (running == &running_prefetch_ || running_on_demand_ == 0)) ready_.notify_all();
    }
}

}  // namespace rafsd
