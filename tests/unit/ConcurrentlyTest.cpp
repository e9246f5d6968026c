#include "daemon/core/Concurrently.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace rafsd;

TEST_CASE("runConcurrently calls every index once, on at most `limit` threads", "[core]") {
    std::vector<std::atomic<int>> calls(20);
    std::atomic<int> running{0};
    std::atomic<int> most{0};
    runConcurrently(calls.size(), 3, [&](size_t i) {
        const int now = ++running;
        for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {}
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ++calls[i];
        --running;
    });
    for (const auto& c : calls) CHECK(c.load() == 1);
    CHECK(most.load() >= 2);
    CHECK(most.load() <= 3);
}

TEST_CASE("runConcurrently rethrows the lowest index's failure after every call ended", "[core]") {
    std::atomic<int> finished{0};
    auto run = [&] {
        runConcurrently(6, 4, [&](size_t i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(i == 4 ? 0 : 10));
            ++finished;
            if (i == 4) throw std::runtime_error("four");
            if (i == 2) throw std::runtime_error("two");
        });
    };
    CHECK_THROWS_WITH(run(), "two");
    CHECK(finished.load() == 6);
}

TEST_CASE("runConcurrently with nothing to do or a limit of 0", "[core]") {
    int calls = 0;
    runConcurrently(0, 4, [&](size_t) { ++calls; });
    CHECK(calls == 0);
    runConcurrently(3, 0, [&](size_t) { ++calls; });
    CHECK(calls == 3);
}
