// A latency histogram with fixed buckets, for Prometheus (a cumulative count per upper bound, a
// sum and a count). Lock-free: one atomic per bucket.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace rafsd {

class LatencyHistogram {
public:
    // Upper bounds in microseconds: 100 µs .. 10 s, roughly 1-2.5-5 per decade.
    static constexpr std::array<uint64_t, 15> kBoundsUs = {100,    250,    500,     1000,    2500,
                                                           5000,   10000,  25000,   50000,   100000,
                                                           250000, 500000, 1000000, 2500000, 10000000};

    void add(std::chrono::microseconds latency);

    struct Snapshot {
        std::array<uint64_t, kBoundsUs.size()> cumulative{};  // observations <= each bound
        uint64_t count = 0;
        uint64_t sum_us = 0;
    };
    Snapshot snapshot() const;

private:
    std::array<std::atomic<uint64_t>, kBoundsUs.size() + 1> buckets_{};  // last: above every bound
    std::atomic<uint64_t> sum_us_{0};
};

}  // namespace rafsd
