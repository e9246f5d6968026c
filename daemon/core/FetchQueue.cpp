#include "daemon/core/FetchQueue.h"

#include <algorithm>

namespace rafsd {

FetchQueue::FetchQueue(unsigned threads, std::function<void()> idle)
    : table_limit_(std::max(1u, threads / 2)), prefetch_limit_(std::max(1u, threads / 4)), idle_(std::move(idle)) {
    for (unsigned i = 0; i < std::max(1u, threads); ++i) threads_.emplace_back([this] { run(); });
}

FetchQueue::~FetchQueue() { finish(); }

void FetchQueue::finish() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        table_.clear();
        prefetch_.clear();
    }
    ready_.notify_all();
    for (auto& t : threads_) {
        if (t.joinable()) t.join();
    }
}

void FetchQueue::abandon() {
    {
        std::lock_guard lock(mutex_);
        abandoned_ = true;
        on_demand_.clear();
    }
    finish();
}

bool FetchQueue::push(Priority priority, std::function<void()> task, std::function<bool()> awaited) {
    {
        std::lock_guard lock(mutex_);
        if (abandoned_) return false;
        if (priority == Priority::OnDemand) {
            on_demand_.push_back(std::move(task));
        } else {
            (priority == Priority::PrefetchTable ? table_ : prefetch_).push_back({std::move(task), std::move(awaited)});
        }
    }
    ready_.notify_one();
    return true;
}

void FetchQueue::recheck() {
    {
        std::lock_guard lock(mutex_);
        if (table_.empty() && prefetch_.empty()) return;
    }
    ready_.notify_all();
}

size_t FetchQueue::prefetchBacklog() const {
    std::lock_guard lock(mutex_);
    return table_.size() + prefetch_.size();
}

bool FetchQueue::takeAwaited(std::function<void()>& task) {
    for (auto* queue : {&table_, &prefetch_}) {
        const auto it = std::find_if(queue->begin(), queue->end(),
                                     [](const PrefetchTask& t) { return t.awaited && t.awaited(); });
        if (it != queue->end()) {
            task = std::move(it->run);
            queue->erase(it);
            return true;
        }
    }
    return false;
}

void FetchQueue::run() {
    std::unique_lock lock(mutex_);
    auto may_table = [this] { return !table_.empty() && !stopping_ && running_table_ < table_limit_; };
    auto may_prefetch = [this] {
        return !prefetch_.empty() && !stopping_ && table_.empty() && running_table_ == 0 &&
               running_prefetch_ < (running_on_demand_ > 0 ? 1u : prefetch_limit_);
    };
    for (;;) {
        std::function<void()> task;
        unsigned* running = nullptr;
        ready_.wait(lock, [&] {
            if (!on_demand_.empty()) {
                task = std::move(on_demand_.front());
                on_demand_.pop_front();
                running = &running_on_demand_;
            } else if (!stopping_ && takeAwaited(task)) {
                running = &running_on_demand_;
            } else if (may_table()) {
                task = std::move(table_.front().run);
                table_.pop_front();
                running = &running_table_;
            } else if (may_prefetch()) {
                task = std::move(prefetch_.front().run);
                prefetch_.pop_front();
                running = &running_prefetch_;
            }
            return running != nullptr || stopping_;
        });
        if (!running) return;  // stopping: queued on-demand work is done; queued prefetch work was dropped
        ++*running;
        lock.unlock();
        task();
        lock.lock();
        --*running;
        // A prefetch slot opened (a prefetch ended, or the last miss did): a thread waiting only
        // for that one may go now.
        if ((!table_.empty() || !prefetch_.empty()) && (running != &running_on_demand_ || running_on_demand_ == 0)) {
            ready_.notify_all();
        }
        if (idle_ && running_on_demand_ + running_table_ + running_prefetch_ == 0 && on_demand_.empty() &&
            table_.empty() && prefetch_.empty()) {
            lock.unlock();
            idle_();
            lock.lock();
        }
    }
}

}  // namespace rafsd
