#include "daemon/core/FetchQueue.h"

namespace rafsd {

FetchQueue::FetchQueue(unsigned threads) {
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
    for (;;) {
        ready_.wait(lock, [this] { return stopping_ || !on_demand_.empty() || !prefetch_.empty(); });
        std::function<void()> task;
        if (!on_demand_.empty()) {
            task = std::move(on_demand_.front());
            on_demand_.pop_front();
        } else if (!prefetch_.empty() && !stopping_) {
            task = std::move(prefetch_.front());
            prefetch_.pop_front();
        } else {
            return;
        }
        lock.unlock();
        task();
        lock.lock();
    }
}

}  // namespace rafsd
