#include "daemon/core/ReaderActivity.h"

#include <catch2/catch.hpp>

#include <thread>

using namespace rafsd;
using namespace std::chrono_literals;

TEST_CASE("readers are quiet after a period without asking, never while one waits", "[readeractivity]") {
    ReaderActivity readers;
    CHECK(readers.quietFor(50ms));  // nobody ever asked
    readers.asked();
    CHECK_FALSE(readers.quietFor(10s));
    std::this_thread::sleep_for(60ms);
    CHECK(readers.quietFor(50ms));
    readers.waitBegan();
    std::this_thread::sleep_for(60ms);
    CHECK_FALSE(readers.quietFor(50ms));  // a miss outstanding is activity however long it takes
    readers.waitEnded();
    CHECK_FALSE(readers.quietFor(50ms));  // its answer counts as asking
    std::this_thread::sleep_for(60ms);
    CHECK(readers.quietFor(50ms));
}
