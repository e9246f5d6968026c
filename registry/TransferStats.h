// Counters of one network backend, for `rafsctl status` and /metrics: requests, bytes, retries,
// failures, token refreshes, whole-blob answers, and latency percentiles over the most recent
// requests.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

namespace registry {

class TransferStats {
public:
    std::atomic<uint64_t> requests{0};         // HTTP requests sent, every attempt
    std::atomic<uint64_t> bytes{0};            // response body bytes received
    std::atomic<uint64_t> retries{0};          // attempts after a failed one
    std::atomic<uint64_t> failures{0};         // reads and probes that failed after every retry
    std::atomic<uint64_t> token_refreshes{0};  // bearer tokens fetched
    // Range requests answered 200 with the whole blob: each such read downloads the blob from its
    // start up to the range's end (RangeSink skips what comes before it and cuts the transfer
    // off after it), a server rafsd reads slowly.
    std::atomic<uint64_t> whole_blob_answers{0};

    void recordLatency(std::chrono::microseconds latency);

    struct Percentiles {
        uint64_t p50_us = 0;
        uint64_t p99_us = 0;
    };
    // Over the last kWindow requests; zeros before the first.
    Percentiles latency() const;

    static constexpr size_t kWindow = 4096;

private:
    mutable std::mutex mutex_;
    std::vector<uint64_t> samples_;  // a ring of kWindow once full
    size_t next_ = 0;
};

}  // namespace registry
