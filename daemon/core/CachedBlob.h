// One blob as the fetcher serves it: descriptor, cache, the chunks being fetched with the
// requests waiting for them, and counters for status. Shared by every image that uses the blob.
#pragma once

#include "daemon/backends/Backend.h"
#include "daemon/core/BlobCache.h"
#include "daemon/core/BlobDescriptor.h"
#include "daemon/core/ChunkUse.h"
#include "daemon/core/DataPlane.h"
#include "daemon/core/LatencyHistogram.h"
#include "daemon/core/RepeatedFailureLog.h"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace rafsd {

struct BlobCounters {
    std::atomic<uint64_t> misses{0};            // requests that had to wait for a fetch
    std::atomic<uint64_t> hits{0};              // requests already present
    std::atomic<uint64_t> bytes_fetched{0};     // from the backend
    std::atomic<uint64_t> bytes_from_cache{0};  // requested bytes already present
    std::atomic<uint64_t> prefetched_chunks{0};
    std::atomic<uint64_t> prefetched_bytes{0};  // stored bytes of those chunks
    std::atomic<uint64_t> errors{0};            // chunks that failed (ChunkFetcher::ErrorCount says which)
    LatencyHistogram miss_latency;     // a request that had to wait: until it was answered
    LatencyHistogram backend_latency;  // one backend read (a run of chunks)
};

// A request waiting for `remaining` chunks; done runs once, with EIO if any chunk failed.
struct PendingRequest {
    Completion done;
    uint32_t remaining = 0;  // guarded by the blob's mutex_: workers count it down
    int error = 0;
    bool reader = true;  // false: a fill (DataPlane::fill), which no reader waits on
};

class CachedBlob {
public:
    CachedBlob(BlobDescriptor descriptor, std::unique_ptr<BlobCache> cache,
               std::shared_ptr<Backend> backend)
        : descriptor_(std::move(descriptor)), cache_(std::move(cache)), backend_(std::move(backend)),
          use_(cache_->chunkCount()) {}

    const BlobDescriptor& descriptor() const { return descriptor_; }
    Backend& backend() { return *backend_; }
    BlobCache& cache() { return *cache_; }
    BlobCounters& counters() { return counters_; }
    const ChunkUse& use() const { return use_; }

    // Called once, when the last chunk becomes present, or at once if a fetch completed the blob
    // already (a blob that another mounted image shares can complete while this image mounts,
    // after its engine saw it incomplete): the fanotify engine unmarks the file.
    // Reads then no longer reach rafsd, so no chunk of the blob may be freed from then on (a read
    // under way would find the hole): set only when the cache is unbounded.
    void onComplete(std::function<void()> fn);

    // The engine drops the file's mark whenever the blob is complete (fanotify with an unbounded
    // cache), at the mount too for a blob complete already: from then on reads of a complete blob
    // do not reach rafsd, so ChunkFetcher::discardIdle frees none of its chunks (a read would find
    // the hole and get zeros). Set before the engine mounts, or takes over, an image using it.
    void unmarkWhenComplete();
    // Whether chunks may be freed from its cache file (ChunkFetcher::discardIdle): the file can free
    // ranges, and the blob is not complete with its mark dropped.
    bool chunksMayBeFreed();

private:
    friend class ChunkFetcher;

    // Runs on_complete_, if set; the caller holds mutex_. A failure is logged: the blob's reads
    // keep raising events, answered from the cache.
    void notifyComplete();
    bool chunksMayBeFreedLocked() const;  // mutex_ held

    BlobDescriptor descriptor_;
    std::unique_ptr<BlobCache> cache_;
    std::shared_ptr<Backend> backend_;  // the backend of the first image that used the blob
    BlobCounters counters_;
    ChunkUse use_;
    std::mutex mutex_;
    std::unordered_map<uint32_t, std::vector<std::shared_ptr<PendingRequest>>> in_flight_;
    std::function<void()> on_complete_;
    bool completed_ = false;
    bool unmark_when_complete_ = false;
    RepeatedFailureLog backend_failures_;
    RepeatedFailureLog write_failures_;  // the cache file's: a full disk fails every write
};

}  // namespace rafsd
