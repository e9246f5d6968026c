#include "daemon/core/Prefetcher.h"

#include "daemon/core/Log.h"

#include <algorithm>
#include <utility>

namespace rafsd {

namespace {
constexpr auto kBacklogPoll = std::chrono::milliseconds(5);
// The prefetch table (a start trace, in the order files were first read) is taken a window of
// this many batches at a time; within a window its chunks are fetched in blob order, with gaps of
// up to kTableGap compressed bytes fetched too, so that a trace of many small files becomes a few
// large requests instead of one round trip per file (docs/benchmarks.md, readiness with a trace).
// A span of the table is one request however large (up to the fetcher's largest range): its
// chunks are decoded as they arrive, so a reader waiting for one of them does not wait for the
// rest, and every request costs a registry several milliseconds of CPU whatever its size.
constexpr uint64_t kTableWindowBatches = 4;
constexpr uint64_t kTableGap = 64 << 10;
// The whole blobs of an image with a trace wait until its readers have asked for nothing for
// kStartQuiet with no miss waiting, or start_wait_max after the table, whichever comes first:
// fetched during a traced python start on a 1 Gbit/s link they took its CPU and delayed its
// misses, 0.09 s of a 0.5 s start (docs/benchmarks.md, readiness with a start trace).
constexpr auto kStartQuiet = std::chrono::milliseconds(100);
}

Prefetcher::Prefetcher(ChunkFetcher& fetcher, uint64_t bandwidth, uint64_t batch, size_t backlog,
                       std::chrono::milliseconds start_wait_max)
    : fetcher_(fetcher), bandwidth_(bandwidth), batch_(std::max<uint64_t>(batch, 1)),
      backlog_(std::max<size_t>(backlog, 1)), start_wait_max_(start_wait_max),
      budget_start_(std::chrono::steady_clock::now()), thread_([this] { run(); }) {}

Prefetcher::~Prefetcher() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
}

void Prefetcher::add(std::vector<PrefetchChunk> first, std::vector<std::shared_ptr<CachedBlob>> blobs) {
    {
        std::lock_guard lock(mutex_);
        auto start = first.empty() ? nullptr : std::make_shared<StartWait>();
        for (auto& c : first) queue_.push_back(std::move(c));
        for (auto& b : blobs) blobs_.push_back({std::move(b), 0, start});
    }
    wake_.notify_all();
}

void Prefetcher::forget(const std::vector<std::shared_ptr<CachedBlob>>& blobs) {
    std::lock_guard lock(mutex_);
    auto gone = [&](const std::shared_ptr<CachedBlob>& b) {
        return std::find(blobs.begin(), blobs.end(), b) != blobs.end();
    };
    std::erase_if(queue_, [&](const PrefetchChunk& c) { return gone(c.blob); });
    std::erase_if(blobs_, [&](const WholeBlob& entry) { return gone(entry.blob); });
}

// A token bucket over one-second windows: simple, and smooth enough for a background task.
void Prefetcher::pace(uint64_t bytes) {
    if (bandwidth_ == 0) return;
    budget_used_ += bytes;
    for (;;) {
        auto elapsed = std::chrono::steady_clock::now() - budget_start_;
        if (elapsed >= std::chrono::seconds(1)) {
            budget_start_ = std::chrono::steady_clock::now();
            budget_used_ = budget_used_ > bandwidth_ ? budget_used_ - bandwidth_ : 0;
            continue;
        }
        if (budget_used_ <= bandwidth_) return;
        std::unique_lock lock(mutex_);
        if (wake_.wait_for(lock, std::chrono::seconds(1) - elapsed, [this] { return stopping_; })) return;
    }
}

std::optional<std::chrono::steady_clock::duration> Prefetcher::startOver(WholeBlob& entry) {
    if (!entry.start || entry.start->over) return std::nullopt;
    StartWait& wait = *entry.start;
    const auto now = std::chrono::steady_clock::now();
    if (!wait.deadline) wait.deadline = now + start_wait_max_;
    if (now >= *wait.deadline || fetcher_.readers().quietFor(kStartQuiet)) {
        wait.over = true;
        return std::nullopt;
    }
    return std::min<std::chrono::steady_clock::duration>(kStartQuiet / 4, *wait.deadline - now);
}

std::vector<PrefetchChunk> Prefetcher::takeTableWindow() {
    std::vector<PrefetchChunk> window;
    uint64_t bytes = 0;
    while (!queue_.empty() && bytes < kTableWindowBatches * batch_) {
        bytes += queue_.front().blob->descriptor().chunks[queue_.front().ci].uncompressed_size;
        window.push_back(std::move(queue_.front()));
        queue_.pop_front();
    }
    return window;
}

void Prefetcher::prefetchWindow(std::vector<PrefetchChunk> window) {
    std::sort(window.begin(), window.end(), [](const PrefetchChunk& a, const PrefetchChunk& b) {
        return std::pair(a.blob.get(), a.ci) < std::pair(b.blob.get(), b.ci);
    });
    // Paced a window at a time, not a span at a time: a window goes out whole, so under a
    // bandwidth cap its last spans are not held back until the next window's first ones are out.
    uint64_t queued = 0;
    for (size_t i = 0; i < window.size();) {
        const std::shared_ptr<CachedBlob>& blob = window[i].blob;
        const auto& chunks = blob->descriptor().chunks;
        const uint32_t first = window[i].ci;
        uint32_t last = first;
        for (++i; i < window.size() && window[i].blob == blob; ++i) {
            const uint32_t ci = window[i].ci;
            if (ci <= last) continue;  // a chunk listed twice
            // Compressed bytes between the span's end and this chunk.
            const uint64_t gap = chunks[ci].compressed_offset -
                                 std::min(chunks[ci].compressed_offset,
                                          chunks[last].compressed_offset + chunks[last].compressed_size);
            if (gap > kTableGap) break;
            last = ci;
        }
        if (blob->cache().complete()) continue;
        if (fetcher_.prefetch(blob, first, last - first + 1, FetchQueue::Priority::PrefetchTable) != 0) {
            queued += chunks[last].compressed_offset + chunks[last].compressed_size - chunks[first].compressed_offset;
        }
    }
    if (queued != 0) pace(queued);
}

void Prefetcher::run() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty() || !blobs_.empty(); });
        if (stopping_) return;
        if (fetcher_.prefetchBacklog() >= backlog_) {
            wake_.wait_for(lock, kBacklogPoll, [this] { return stopping_; });
            continue;
        }
        if (!queue_.empty()) {
            std::vector<PrefetchChunk> window = takeTableWindow();
            lock.unlock();
            prefetchWindow(std::move(window));
            lock.lock();
            continue;
        }
        if (const auto wait = startOver(blobs_.front())) {
            wake_.wait_for(lock, *wait, [this] { return stopping_ || !queue_.empty(); });
            continue;
        }
        // The next run of consecutive chunks of one blob, one prefetch request's worth.
        std::shared_ptr<CachedBlob> blob;
        uint32_t first = 0;
        uint32_t count = 0;
        uint64_t compressed = 0;
        {
            WholeBlob& entry = blobs_.front();
            blob = entry.blob;
            first = entry.next;
            const auto& chunks = blob->descriptor().chunks;
            const uint64_t range = fetcher_.prefetchRangeBytes();
            while (first + count < chunks.size() && compressed < range) {
                compressed += chunks[first + count].compressed_size;
                ++count;
            }
            entry.next = first + count;
            if (entry.next >= chunks.size()) blobs_.pop_front();
        }
        lock.unlock();
        if (count != 0 && !blob->cache().complete()) {
            uint32_t queued = fetcher_.prefetch(blob, first, count);
            if (queued != 0) pace(compressed);
        }
        lock.lock();
    }
}

}  // namespace rafsd
