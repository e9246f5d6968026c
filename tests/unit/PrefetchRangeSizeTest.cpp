#include "daemon/core/PrefetchRangeSize.h"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using rafsd::PrefetchRangeSize;

namespace {

constexpr uint64_t kKiB = 1024;

// From 128 KiB to 4 MiB, each request to take about 20 ms.
PrefetchRangeSize rangeSize() { return PrefetchRangeSize(128 * kKiB, 4096 * kKiB, 20ms); }

// `times` requests of the current size, each taking `took`.
void record(PrefetchRangeSize& size, int times, std::chrono::microseconds took) {
    for (int i = 0; i < times; ++i) size.record(size.bytes(), took);
}

}  // namespace

// One backend over time: fast (a registry on the loopback), then slow (a loaded link).
TEST_CASE("prefetch ranges start small, grow while the backend is fast, shrink when it is slow",
          "[prefetch]") {
    PrefetchRangeSize size = rangeSize();
    CHECK(size.bytes() == 128 * kKiB);
    record(size, 1, 5ms);
    CHECK(size.bytes() == 256 * kKiB);
    record(size, 10, 5ms);
    CHECK(size.bytes() == 4096 * kKiB);  // never past the largest
    record(size, 1, 100ms);
    CHECK(size.bytes() == 2048 * kKiB);
    // Within half to twice the target: the size stays.
    record(size, 1, 15ms);
    record(size, 1, 39ms);
    CHECK(size.bytes() == 2048 * kKiB);
    record(size, 10, 100ms);
    CHECK(size.bytes() == 128 * kKiB);  // never below the smallest
}

TEST_CASE("a small fast prefetch range does not grow the size", "[prefetch]") {
    PrefetchRangeSize size = rangeSize();
    record(size, 3, 5ms);
    REQUIRE(size.bytes() == 1024 * kKiB);
    // The tail of a blob: 100 KiB answered at once says nothing about 1 MiB.
    size.record(100 * kKiB, 1ms);
    CHECK(size.bytes() == 1024 * kKiB);
    // A slow one does say the backend is slow, whatever its size.
    size.record(100 * kKiB, 50ms);
    CHECK(size.bytes() == 512 * kKiB);
}
