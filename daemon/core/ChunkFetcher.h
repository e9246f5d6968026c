// The core behind DataPlane: plans a miss, fetches each chunk once however many readers wait for
// it (single flight), verifies it, writes it to the cache, then completes the waiting requests.
#pragma once

#include "daemon/core/AccessTrace.h"
#include "daemon/core/CachedBlob.h"
#include "daemon/core/DataPlane.h"
#include "daemon/core/FetchPlanner.h"
#include "daemon/core/FetchQueue.h"
#include "daemon/core/PrefetchRangeSize.h"
#include "daemon/core/ReaderActivity.h"
#include "daemon/core/ScratchPool.h"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <vector>

namespace rafsd {

struct FetchOptions {
    uint64_t amplify = 1u << 20;  // read amplification window
    unsigned threads = 8;         // backend requests in flight at most
    unsigned retries = 1;         // extra fetches of a chunk that fails verification
    unsigned decoders = 0;        // chunks decompressed and verified at once; 0 = one per CPU
};

class ChunkFetcher : public DataPlane {
public:
    explicit ChunkFetcher(const FetchOptions& options);
    ~ChunkFetcher() override;

    // For a stop, once the engines wait for nothing: drops every queued fetch (FetchQueue::abandon),
    // and fails (EIO) the requests that waited for them; the fetcher serves no request after it.
    void abandonQueued();

    // Registers an image's blobs (in blob-table order); returns the image number engines use.
    uint32_t addImage(std::vector<std::shared_ptr<CachedBlob>> blobs);
    void removeImage(uint32_t image);

    void makePresent(uint32_t image, uint32_t blob, uint64_t offset, uint64_t length,
                     Completion done) override;
    uint32_t forgetLost(uint32_t image, uint32_t blob, uint64_t offset, uint64_t length) override;
    void fill(uint32_t image, uint32_t blob, Completion done) override;

    // Starts fetching the missing chunks among [first, first + count) of `blob` in the
    // background, behind every miss (`priority`: Prefetch or PrefetchTable, see FetchQueue).
    // Returns how many chunks were queued.
    uint32_t prefetch(const std::shared_ptr<CachedBlob>& blob, uint32_t first, uint32_t count,
                      FetchQueue::Priority priority = FetchQueue::Priority::Prefetch);
    size_t prefetchBacklog() const { return queue_->prefetchBacklog(); }
    // Compressed bytes a prefetch request should ask for now (see PrefetchRangeSize).
    uint64_t prefetchRangeBytes() const { return prefetch_range_.bytes(); }
    // The readers of every image, as makePresent sees them.
    const ReaderActivity& readers() const { return readers_; }

    // Frees the chunks among [first, first + count) of `blob` that are present, not being fetched,
    // and last used before `used_before` (ChunkUse::now() units), if its cache file can free
    // ranges (CacheFile::canDiscard) and every read of it still asks rafsd first (not a complete
    // blob the engine unmarked, CachedBlob::unmarkWhenComplete). Returns the bytes freed. Throws Error
    // when the file fails; chunks freed until then stay freed.
    uint64_t discardIdle(CachedBlob& blob, uint32_t first, uint32_t count, uint32_t used_before);

    // Called by a fetch thread whose cache write found the disk full (ENOSPC, EDQUOT, ENOBUFS): frees space
    // and returns true if the write should be tried once more. Set before any image is added.
    void onNoSpace(std::function<bool()> fn) { no_space_ = std::move(fn); }

    // The image's chunks, (blob, ci), in the order they were first asked for since addImage.
    std::vector<std::pair<uint32_t, uint32_t>> trace(uint32_t image);

private:
    struct RegisteredImage {
        std::vector<std::shared_ptr<CachedBlob>> blobs;
        std::shared_ptr<AccessTrace> trace;
        bool used = false;
    };

    struct BlobAndTrace {
        std::shared_ptr<CachedBlob> blob;
        // The trace of every image that uses the blob, with the blob's index in it: the engines'
        // requests name a cache file, which images sharing a blob share, not the mount that read it.
        std::vector<std::pair<std::shared_ptr<AccessTrace>, uint32_t>> traces;
    };
    // Both under one lock: makePresent needs both on every request.
    BlobAndTrace blobOf(uint32_t image, uint32_t blob);
    // The blob alone, without the walk over every image for the traces.
    std::shared_ptr<CachedBlob> blobAt(uint32_t image, uint32_t blob);
    std::shared_ptr<CachedBlob> blobLocked(uint32_t image, uint32_t blob) const;  // images_mutex_ held
    // A reader's request (traced, counted, read ahead of) or a fill (none of that).
    enum class Access { Read, Fill };
    // Looks the blob up and makes the request, or completes `done` with EIO for an unknown blob.
    void makePresent(uint32_t image, uint32_t blob, uint64_t offset, uint64_t length, Completion done, Access access);
    // The request's `attempt`th try: it is tried again when a chunk it found present was freed
    // while it waited for the others, with the blob it was made for (an image number may name
    // another image's blobs by then: numbers are reused).
    void attemptRequest(std::shared_ptr<const BlobAndTrace> found, uint64_t offset, uint64_t length, Completion done,
                        unsigned attempt, Access access);
    // Whether chunks [range) are all present, stamping them as used (under the blob's lock): from
    // then on the collector leaves them for keep_recent seconds.
    bool presentAndUsed(CachedBlob& blob, ChunkRange range);
    // `stream`: decode the run's chunks as they arrive (decodeArrived), for runs readers wait for
    // or soon will: misses and the prefetch table. Whole-blob prefetch decodes once its transfer
    // is over: on a fast backend, decoding alongside took more CPU for nothing (a loopback full-tree
    // read, rafsd 0.44 to 0.52 CPU-seconds against 0.36 to 0.43: docs/benchmarks.md).
    void fetchRun(const std::shared_ptr<CachedBlob>& blob, FetchRun run, bool prefetch, bool stream);
    // Queues fetchRun for a run whose chunks are marked in flight. A run the queue drops (a stop
    // abandoned it) or fails to take fails its chunks (EIO): nothing else would ever complete them.
    void queueRun(const std::shared_ptr<CachedBlob>& blob, const FetchRun& run, FetchQueue::Priority priority,
                  bool prefetch, bool stream, std::function<bool()> awaited = {});
    // How far a run's chunks are decoded and written (fetchRun).
    struct RunProgress;
    // Decodes the run's next chunks whose stored bytes lie within the first `filled` bytes fetched,
    // and writes them. While the transfer goes on a bad chunk stops it: it is fetched again alone
    // once the transfer is over, with the rest (`transfer_over`).
    void decodeArrived(CachedBlob& blob, const FetchRun& run, RunProgress& progress, size_t filled,
                       bool transfer_over);
    // Writes the run's decoded chunks up to `upto`, not written yet.
    void writeDecoded(CachedBlob& blob, RunProgress& progress, uint32_t upto);
    // Decodes and verifies one chunk into its zero-padded extent: what is wrong with it, if anything.
    std::optional<std::string> decodeInto(CachedBlob& blob, uint32_t ci, std::span<const uint8_t> stored,
                                          std::span<uint8_t> extent);
    bool decode(CachedBlob& blob, uint32_t ci, std::span<const uint8_t> stored, std::span<uint8_t> extent);
    void writeChunks(CachedBlob& blob, uint32_t first, uint32_t count, std::span<const uint8_t> extents);
    // Whether a request (`readers_only`: a reader's, not a fill) waits for one of chunks [first, end).
    bool hasWaiters(CachedBlob& blob, uint32_t first, uint32_t end, bool readers_only = false);
    static bool hasWaitersLocked(const CachedBlob& blob, uint32_t first, uint32_t end,
                                 bool readers_only);  // the blob's mutex_ held
    // A prefetch run whose cache file cannot be written now, and for which no reader waits, is
    // dropped before it is fetched: its chunks are no longer in flight. Else false.
    bool dropUnwritable(CachedBlob& blob, const FetchRun& run);
    // Which failed chunks count in the blob's errors: none (a run dropped at a stop failed no
    // fetch), those a read waited for (a failure of the whole run: the backend, the cache disk,
    // which would otherwise count a miss's amplification and read-ahead each time, hundreds of
    // times the reads on a full disk), or all (a chunk bad in itself: its digest).
    enum class ErrorCount { None, Awaited, All };
    // Completes chunks [first, first + count) in flight, with `error` (0: fetched).
    void finishChunks(CachedBlob& blob, uint32_t first, uint32_t count, int error,
                      ErrorCount counted = ErrorCount::Awaited);
    // Whether the cache's disk was found full, with nothing to free, a moment ago: a run fetched now
    // would be thrown away (a full-tree read on a full disk fetched 35 times the blob).
    bool diskJustFull() const;

    FetchOptions options_;
    FetchPlanner planner_;
    PrefetchRangeSize prefetch_range_;
    std::counting_semaphore<> decoders_;
    std::mutex images_mutex_;
    std::vector<RegisteredImage> images_;
    std::function<bool()> no_space_;
    // When a cache write last failed for a full disk with nothing left to free (steady_clock ticks;
    // 0 once a write has worked since). Runs due within kFullDiskPause of it fail unfetched.
    std::atomic<int64_t> disk_full_at_{0};
    ReaderActivity readers_;
    struct FetchBuffers;
    ScratchPool<FetchBuffers> buffers_;
    std::unique_ptr<FetchQueue> queue_;  // last: its threads stop before the rest goes away
};

}  // namespace rafsd
