#include "daemon/core/FetchQueue.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using rafsd::FetchQueue;

namespace {

// A task that blocks its fetch thread until released, and says when it has started. Released
// when destroyed at the latest: declared after the queue, it lets a failed test end (the queue's
// destructor joins its threads).
class Gate {
public:
    ~Gate() { release(); }
    std::function<void()> task() {
        return [started = started_, open = open_] {
            started->set_value();
            open.wait();
        };
    }
    void waitStarted() { REQUIRE(started_future_.wait_for(std::chrono::seconds(10)) == std::future_status::ready); }
    void release() {
        if (!released_.exchange(true)) release_.set_value();
    }

private:
    std::shared_ptr<std::promise<void>> started_ = std::make_shared<std::promise<void>>();
    std::future<void> started_future_ = started_->get_future();
    std::promise<void> release_;
    std::shared_future<void> open_ = release_.get_future().share();
    std::atomic<bool> released_{false};
};

// Names of the tasks in the order they ran.
class Order {
public:
    std::function<void()> task(std::string name) {
        return [this, name] {
            std::lock_guard lock(mutex_);
            names_.push_back(name);
        };
    }
    std::vector<std::string> names() {
        std::lock_guard lock(mutex_);
        return names_;
    }

private:
    std::mutex mutex_;
    std::vector<std::string> names_;
};

// Eight fetch threads, one fetching a miss and one a whole-blob prefetch, both held until the
// queue goes (the gates, declared after it, are released first).
struct BusyQueue {
    FetchQueue queue{8};
    Gate miss;
    Gate blob;
    BusyQueue() {
        CHECK(queue.push(FetchQueue::Priority::OnDemand, miss.task()));
        miss.waitStarted();
        CHECK(queue.push(FetchQueue::Priority::Prefetch, blob.task()));
        blob.waitStarted();
    }
};

bool ranSoon(std::promise<void>& ran) {
    return ran.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready;
}

}  // namespace

TEST_CASE("queued on-demand work goes before queued prefetch work", "[fetchqueue]") {
    Order order;
    {
        FetchQueue queue(1);
        Gate busy;
        CHECK(queue.push(FetchQueue::Priority::OnDemand, busy.task()));
        busy.waitStarted();
        CHECK(queue.push(FetchQueue::Priority::Prefetch, order.task("prefetch")));
        CHECK(queue.push(FetchQueue::Priority::OnDemand, order.task("miss")));
        busy.release();
    }  // the destructor finishes on-demand work and drops prefetch work
    const auto names = order.names();
    REQUIRE(!names.empty());
    CHECK(names.front() == "miss");
}

// A stop that gave up on what it queued (a fill) must not wait for it: only running work ends.
TEST_CASE("abandon drops queued on-demand work too, and what running work pushes", "[fetchqueue]") {
    Order order;
    Gate busy;
    std::atomic<bool> dropped = false;
    FetchQueue queue(1);
    CHECK(queue.push(FetchQueue::Priority::OnDemand, [&, task = busy.task()] {
        task();
        dropped = !queue.push(FetchQueue::Priority::OnDemand, order.task("pushed while abandoning"));
        order.task("running")();
    }));
    busy.waitStarted();
    CHECK(queue.push(FetchQueue::Priority::OnDemand, order.task("queued")));
    std::thread releaser([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // abandon() has been called by then
        busy.release();
    });
    queue.abandon();
    releaser.join();
    CHECK(order.names() == std::vector<std::string>{"running"});
    CHECK(dropped);
}

// Six threads idle: a second whole-blob prefetch that started beside the miss and the first
// would say so.
TEST_CASE("whole-blob prefetch holds one thread while a miss is fetched", "[fetchqueue]") {
    std::atomic<bool> second_started{false};
    std::promise<void> second_ran;
    BusyQueue busy;
    CHECK(busy.queue.push(FetchQueue::Priority::Prefetch, [&] {
        second_started = true;
        second_ran.set_value();
    }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // time for a wrong start
    CHECK(!second_started.load());
    busy.blob.release();
    CHECK(ranSoon(second_ran));
}

TEST_CASE("a queued prefetch task a reader waits for runs at once, ahead of the other prefetch work",
          "[fetchqueue]") {
    Order order;
    std::atomic<bool> second_awaited{false};
    std::promise<void> second_ran;
    BusyQueue busy;
    CHECK(busy.queue.push(FetchQueue::Priority::Prefetch, order.task("first"), [] { return false; }));
    CHECK(busy.queue.push(
        FetchQueue::Priority::Prefetch,
        [&] {
            order.task("second")();
            second_ran.set_value();
        },
        [&] { return second_awaited.load(); }));
    second_awaited = true;  // a reader came to wait for the second one's chunks
    busy.queue.recheck();
    // It runs as on-demand work: beside the miss and the busy prefetch, before the first.
    REQUIRE(ranSoon(second_ran));
    CHECK(order.names() == std::vector<std::string>{"second"});
}

// The prefetch table is what the container reads next: it goes on beside misses and beside
// whole-blob prefetch.
TEST_CASE("prefetch-table work starts while a miss and whole-blob prefetch are fetched", "[fetchqueue]") {
    std::promise<void> table_ran;
    BusyQueue busy;
    CHECK(busy.queue.push(FetchQueue::Priority::PrefetchTable, [&] { table_ran.set_value(); }));
    CHECK(ranSoon(table_ran));
}

TEST_CASE("whole-blob prefetch waits until the prefetch table's work is done", "[fetchqueue]") {
    std::atomic<bool> blob_started{false};
    std::promise<void> blob_ran;
    FetchQueue queue(8);
    Gate table;
    CHECK(queue.push(FetchQueue::Priority::PrefetchTable, table.task()));
    table.waitStarted();
    CHECK(queue.push(FetchQueue::Priority::Prefetch, [&] {
        blob_started = true;
        blob_ran.set_value();
    }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // time for a wrong start
    CHECK(!blob_started.load());
    table.release();
    CHECK(ranSoon(blob_ran));
}

TEST_CASE("the idle hook runs once no task is queued or running, not while one runs", "[fetchqueue]") {
    std::atomic<int> idled{0};
    FetchQueue queue(2, [&] { ++idled; });
    Gate first;
    Gate second;
    CHECK(queue.push(FetchQueue::Priority::OnDemand, first.task()));
    CHECK(queue.push(FetchQueue::Priority::OnDemand, second.task()));
    first.waitStarted();
    second.waitStarted();
    first.release();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // time for a wrong call
    CHECK(idled.load() == 0);
    second.release();
    for (int i = 0; i < 1000 && idled.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(idled.load() == 1);
}
