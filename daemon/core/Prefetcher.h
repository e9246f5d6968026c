// Background prefetch: the chunks of the image's prefetch-table files first, then every chunk of
// each blob in order, queued behind on-demand misses a few runs at a time, under a bandwidth cap.
// An image with a prefetch table (a start trace) has its whole blobs fetched once its start is
// over: its readers quiet, or a few seconds after the table, whichever comes first.
#pragma once

#include "daemon/core/ChunkFetcher.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace rafsd {

struct PrefetchChunk {
    std::shared_ptr<CachedBlob> blob;
    uint32_t ci = 0;
};

class Prefetcher {
public:
    // How long a traced image's whole blobs wait for its start to be over at most.
    static constexpr std::chrono::milliseconds kStartWaitMax{3000};

    // bandwidth: compressed bytes per second queued at most (0 = unlimited); batch: bytes of
    // uncompressed data per window of the prefetch table (see Prefetcher.cpp); backlog: runs
    // waiting in the fetch queue at most. Whole-blob requests are of about the fetcher's
    // prefetchRangeBytes() (see PrefetchRangeSize); the table's spans are one request each.
    Prefetcher(ChunkFetcher& fetcher, uint64_t bandwidth, uint64_t batch, size_t backlog,
               std::chrono::milliseconds start_wait_max = kStartWaitMax);
    ~Prefetcher();
    Prefetcher(const Prefetcher&) = delete;
    Prefetcher& operator=(const Prefetcher&) = delete;

    // Queues `first` (in order), then each blob of `blobs` whole; those after the start if
    // `first` is not empty.
    void add(std::vector<PrefetchChunk> first, std::vector<std::shared_ptr<CachedBlob>> blobs);
    // Drops queued work for these blobs (their image is going away).
    void forget(const std::vector<std::shared_ptr<CachedBlob>>& blobs);

private:
    void run();
    // The next window of the prefetch table, in table order; the caller holds mutex_.
    std::vector<PrefetchChunk> takeTableWindow();
    // Queues a window's chunks by spans of each blob (see kTableGap in Prefetcher.cpp).
    void prefetchWindow(std::vector<PrefetchChunk> window);
    void pace(uint64_t bytes);

    // A traced image's wait for its start to be over, shared by its blobs: they wait together.
    struct StartWait {
        bool over = false;
        std::optional<std::chrono::steady_clock::time_point> deadline;
    };
    struct WholeBlob {
        std::shared_ptr<CachedBlob> blob;
        uint32_t next = 0;                 // the next ci to queue
        std::shared_ptr<StartWait> start;  // null for an image without a prefetch table
    };
    // Whether `entry` may be fetched now; if not, how long to wait before asking again. The caller
    // holds mutex_.
    std::optional<std::chrono::steady_clock::duration> startOver(WholeBlob& entry);

    ChunkFetcher& fetcher_;
    uint64_t bandwidth_;
    uint64_t batch_;
    size_t backlog_;
    std::chrono::milliseconds start_wait_max_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<PrefetchChunk> queue_;  // whole blobs are expanded lazily: see run()
    std::deque<WholeBlob> blobs_;
    bool stopping_ = false;
    std::chrono::steady_clock::time_point budget_start_;
    uint64_t budget_used_ = 0;
    std::thread thread_;
};

}  // namespace rafsd
