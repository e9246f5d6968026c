#include "daemon/core/PrefetchRangeSize.h"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using rafsd::PrefetchRangeSize;

namespace {
constexpr uint64_t kKiB = 1024;
}

TEST_CASE("prefetch ranges start small and grow while the backend answers fast", "[prefetch]") {
    PrefetchRangeSize size(128 * kKiB, 4096 * kKiB, 20ms);
    CHECK(size.bytes() == 128 * kKiB);
    size.record(128 * kKiB, 5ms);
    CHECK(size.bytes() == 256 * kKiB);
    for (int i = 0; i < 10; ++i) size.record(size.bytes(), 5ms);
    CHECK(size.bytes() == 4096 * kKiB);  // never past the largest
}

TEST_CASE("prefetch ranges shrink when the backend is slow, and hold in between", "[prefetch]") {
    PrefetchRangeSize size(128 * kKiB, 4096 * kKiB, 20ms);
    for (int i = 0; i < 5; ++i) size.record(size.bytes(), 5ms);
    REQUIRE(size.bytes() == 4096 * kKiB);
    size.record(4096 * kKiB, 100ms);
    CHECK(size.bytes() == 2048 * kKiB);
    // Within half to twice the target: the size stays.
    size.record(2048 * kKiB, 15ms);
    size.record(2048 * kKiB, 39ms);
    CHECK(size.bytes() == 2048 * kKiB);
    for (int i = 0; i < 10; ++i) size.record(size.bytes(), 100ms);
    CHECK(size.bytes() == 128 * kKiB);  // never below the smallest
}

TEST_CASE("a small fast prefetch range does not grow the size", "[prefetch]") {
    PrefetchRangeSize size(128 * kKiB, 4096 * kKiB, 20ms);
    for (int i = 0; i < 3; ++i) size.record(size.bytes(), 5ms);
    REQUIRE(size.bytes() == 1024 * kKiB);
    // The tail of a blob: 100 KiB answered at once says nothing about 1 MiB.
    size.record(100 * kKiB, 1ms);
    CHECK(size.bytes() == 1024 * kKiB);
    // A slow one does say the backend is slow, whatever its size.
    size.record(100 * kKiB, 50ms);
    CHECK(size.bytes() == 512 * kKiB);
}
