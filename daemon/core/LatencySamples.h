// Latencies kept for percentiles (p50, p99 in status and exit counters): up to a bound of samples,
// the first ones kept when it is reached. Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace rafsd {

class LatencySamples {
public:
    static constexpr size_t kMaxSamples = size_t{1} << 20;

    void add(std::chrono::microseconds latency);
    // The p-th percentile (0..100) in microseconds; 0 without samples.
    uint64_t percentileUs(unsigned p) const;

private:
    mutable std::mutex mutex_;
    std::vector<uint32_t> samples_us_;
};

}  // namespace rafsd
