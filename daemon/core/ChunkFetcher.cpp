#include "daemon/core/ChunkFetcher.h"

#include "format/ByteView.h"
#include "format/Error.h"
#include "daemon/core/ChunkVerifier.h"
#include "daemon/core/Log.h"
#include "daemon/core/ScratchBuffer.h"

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <thread>

namespace rafsd {

namespace {

// Tries of a request whose present chunks were freed while it waited (makePresent): each follows a
// wait longer than keep_recent with a collection in it, so a few are plenty.
constexpr unsigned kPresentAttempts = 4;
// One backend range at most. Each request costs a registry more than its bytes: at 4 MiB the
// loopback registry read took 41 requests and 1.5x the localfs read, at 8 MiB 28 and 1.4x; 16 MiB
// saved a little more but raised the daemon's peak RSS by 10 MiB (docs/benchmarks.md).
constexpr uint64_t kMaxRun = 8u << 20;
// Prefetch requests (see PrefetchRangeSize): from 128 KiB to kMaxRun, each taking about 40 ms. A
// miss behind prefetch on a 100 Mbit/s link then waits tens of milliseconds, not hundreds, and
// on the loopback a registry serves a blob in a few dozen requests instead of hundreds.
constexpr uint64_t kMinPrefetchRange = 128u << 10;
constexpr auto kPrefetchRangeTime = std::chrono::milliseconds(40);
// Decoded chunks go to the cache file in batches of back-to-back extents of at most this many
// bytes, one write each (a larger chunk is a batch of its own).
constexpr size_t kMaxBatch = 1u << 20;
// What the fetch buffers keep once no run is in flight: enough for an on-demand run. A run larger
// than that gets a buffer for the largest one at once, so the growing prefetch runs (see
// PrefetchRangeSize) fault one buffer in, not one per size.
constexpr size_t kKeepBuffer = 2u << 20;
// After a cache write failed for a full disk that the collector could not free: runs due meanwhile
// fail without being fetched. A second at most of reads failing that space freed by someone else
// would have let through.
constexpr auto kFullDiskPause = std::chrono::seconds(1);

bool isNoSpace(int code) { return code == ENOSPC || code == EDQUOT || code == ENOBUFS; }

}  // namespace

struct ChunkFetcher::FetchBuffers {
    ScratchBuffer fetched;  // a run's bytes from the backend
    ScratchBuffer decoded;  // a batch of decoded, zero-padded extents
    void trim(size_t keep) {
        fetched.trim(keep);
        decoded.trim(keep);
    }
};

namespace {

// A backend read, timed for the backend latency histogram; returns how long it took. `arrived`, if
// set, follows the bytes as they come (Backend::readArriving). The transfer goes on while it runs,
// but the last call may outlast the transfer: its time is left out, an approximation (that call
// may also have ended well before the transfer did).
// `elsewhere`: a read again of bytes that failed their digest (Backend::readElsewhere).
std::chrono::microseconds timedRead(CachedBlob& blob, uint64_t offset, std::span<uint8_t> out,
                                    const Backend::Arrived& arrived = {}, bool elsewhere = false) {
    using Clock = std::chrono::steady_clock;
    const auto since = Clock::now();
    Clock::duration last_arrived{};
    if (arrived) {
        blob.backend().readArriving(blob.descriptor().id, offset, out, [&](size_t filled) {
            const auto called = Clock::now();
            const size_t next = arrived(filled);
            last_arrived = Clock::now() - called;
            return next;
        });
    } else if (elsewhere) {
        blob.backend().readElsewhere(blob.descriptor().id, offset, out);
    } else {
        blob.backend().read(blob.descriptor().id, offset, out);
    }
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - since - last_arrived);
    blob.counters().backend_latency.add(took);
    return took;
}

unsigned decoderCount(unsigned configured) {
    if (configured != 0) return configured;
    return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

ChunkFetcher::ChunkFetcher(const FetchOptions& options)
    : options_(options), planner_(options.amplify, std::max(kMaxRun, options.amplify)),
      prefetch_range_(kMinPrefetchRange, kMaxRun, kPrefetchRangeTime),
      decoders_(decoderCount(options.decoders)),
      queue_(std::make_unique<FetchQueue>(options.threads, [this] { buffers_.trim(kKeepBuffer); })) {}

// Finished through queue_ while it still points at the queue: a task finishing then may make a
// request again (makePresent), which pushes to it.
ChunkFetcher::~ChunkFetcher() { queue_->finish(); }

void ChunkFetcher::abandonQueued() {
    queue_->abandon();
    // No fetch runs now, and none will: what is still in flight was queued and dropped.
    std::vector<std::shared_ptr<CachedBlob>> blobs;
    {
        std::lock_guard lock(images_mutex_);
        for (const RegisteredImage& image : images_) blobs.insert(blobs.end(), image.blobs.begin(), image.blobs.end());
    }
    for (const std::shared_ptr<CachedBlob>& blob : blobs) {
        std::vector<uint32_t> dropped;
        {
            std::lock_guard lock(blob->mutex_);
            for (const auto& [ci, waiting] : blob->in_flight_) dropped.push_back(ci);
        }
        for (uint32_t ci : dropped) finishChunks(*blob, ci, 1, EIO, ErrorCount::None);
    }
}

uint32_t ChunkFetcher::addImage(std::vector<std::shared_ptr<CachedBlob>> blobs) {
    std::vector<uint32_t> chunk_counts;
    for (const auto& b : blobs) chunk_counts.push_back(static_cast<uint32_t>(b->descriptor().chunks.size()));
    RegisteredImage entry{std::move(blobs), std::make_shared<AccessTrace>(chunk_counts), true};
    std::lock_guard lock(images_mutex_);
    for (size_t i = 0; i < images_.size(); ++i) {
        if (!images_[i].used) {
            images_[i] = std::move(entry);
            return static_cast<uint32_t>(i);
        }
    }
    images_.push_back(std::move(entry));
    return static_cast<uint32_t>(images_.size() - 1);
}

void ChunkFetcher::removeImage(uint32_t image) {
    std::lock_guard lock(images_mutex_);
    if (image < images_.size()) images_[image] = {};
}

std::shared_ptr<CachedBlob> ChunkFetcher::blobLocked(uint32_t image, uint32_t blob) const {
    if (image >= images_.size() || blob >= images_[image].blobs.size()) return {};
    return images_[image].blobs[blob];
}

std::shared_ptr<CachedBlob> ChunkFetcher::blobAt(uint32_t image, uint32_t blob) {
    std::lock_guard lock(images_mutex_);
    return blobLocked(image, blob);
}

ChunkFetcher::BlobAndTrace ChunkFetcher::blobOf(uint32_t image, uint32_t blob) {
    std::lock_guard lock(images_mutex_);
    BlobAndTrace found{blobLocked(image, blob), {}};
    if (!found.blob) return found;
    for (const RegisteredImage& entry : images_) {
        if (!entry.used) continue;
        const auto it = std::find(entry.blobs.begin(), entry.blobs.end(), found.blob);
        if (it != entry.blobs.end()) found.traces.emplace_back(entry.trace, static_cast<uint32_t>(it - entry.blobs.begin()));
    }
    return found;
}

std::vector<std::pair<uint32_t, uint32_t>> ChunkFetcher::trace(uint32_t image) {
    std::shared_ptr<AccessTrace> t;
    {
        std::lock_guard lock(images_mutex_);
        if (image < images_.size()) t = images_[image].trace;
    }
    return t ? t->order() : std::vector<std::pair<uint32_t, uint32_t>>{};
}

uint32_t ChunkFetcher::forgetLost(uint32_t image, uint32_t blob_index, uint64_t offset, uint64_t length) {
    std::shared_ptr<CachedBlob> blob = blobAt(image, blob_index);
    if (!blob) return 0;
    BlobCache& cache = blob->cache();
    const ChunkRange range = cache.chunksCovering(offset, length);
    bool any_present = false;
    for (uint32_t ci = range.begin; ci < range.end && !any_present; ++ci) any_present = cache.isPresent(ci);
    if (!any_present) return 0;
    return cache.validate(range);
}

void ChunkFetcher::makePresent(uint32_t image, uint32_t blob_index, uint64_t offset,
                               uint64_t length, Completion done) {
    makePresent(image, blob_index, offset, length, std::move(done), Access::Read);
}

void ChunkFetcher::fill(uint32_t image, uint32_t blob_index, Completion done) {
    makePresent(image, blob_index, 0, UINT64_MAX, std::move(done), Access::Fill);
}

bool ChunkFetcher::presentAndUsed(CachedBlob& blob, ChunkRange range) {
    std::lock_guard lock(blob.mutex_);
    blob.use_.touch(range.begin, range.end);
    for (uint32_t ci = range.begin; ci < range.end; ++ci) {
        if (!blob.cache().isPresent(ci)) return false;
    }
    return true;
}

void ChunkFetcher::makePresent(uint32_t image, uint32_t blob_index, uint64_t offset, uint64_t length,
                               Completion done, Access access) {
    auto found = std::make_shared<const BlobAndTrace>(blobOf(image, blob_index));
    if (!found->blob) {
        log::error("request for unknown blob {} of image {}", blob_index, image);
        done(EIO);
        return;
    }
    attemptRequest(std::move(found), offset, length, std::move(done), 0, access);
}

void ChunkFetcher::attemptRequest(std::shared_ptr<const BlobAndTrace> found, uint64_t offset, uint64_t length,
                                  Completion done, unsigned attempt, Access access) {
    const std::shared_ptr<CachedBlob>& blob = found->blob;
    const BlobDescriptor& d = blob->descriptor();
    if (offset >= d.uncompressed_size) {
        done(0);  // past the data: the cache file's tail is zeros already
        return;
    }
    length = std::min(length, d.uncompressed_size - offset);
    const bool read = access == Access::Read;
    const auto asked_at = std::chrono::steady_clock::now();
    if (read) readers_.asked(asked_at);

    // The chunks the read touches (4 KiB-rounded extents): stamped as used, and the trace's record.
    const ChunkRange used = blob->cache().chunksCovering(offset, length);
    auto request = std::make_shared<PendingRequest>();
    request->reader = read;
    // A miss is answered through this wrapper, which times it; a hit directly. The chunks found
    // present are protected from the cache collector only by their use stamp, for keep_recent
    // seconds: a miss that waited longer may find one freed (a full disk's collection), and an
    // answer now would let the kernel read its hole, so the request is made again.
    auto answer = std::make_shared<Completion>(std::move(done));
    request->done = [this, found, answer, since = asked_at, offset, length, used, attempt, access](int error) {
        if (access == Access::Read) {
            found->blob->counters().miss_latency.add(
                std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - since));
            readers_.waitEnded();
        }
        if (error == 0 && !presentAndUsed(*found->blob, used)) {
            if (attempt + 1 < kPresentAttempts) {
                attemptRequest(found, offset, length, std::move(*answer), attempt + 1, access);
                return;
            }
            log::error("blob {}: chunks of a request were freed {} times while it waited; it fails (EIO)",
                       found->blob->descriptor().id, kPresentAttempts);
            error = EIO;
        }
        (*answer)(error);
    };
    FetchPlan plan;
    bool awaits_others = false;  // waits for a chunk another request or a prefetch fetches
    {
        std::lock_guard lock(blob->mutex_);
        plan = planner_.plan(d.chunks, offset, length, [&](uint32_t ci) {
            if (blob->cache().isPresent(ci)) return ChunkState::Present;
            return blob->in_flight_.count(ci) != 0 ? ChunkState::InFlight : ChunkState::Missing;
        });
        awaits_others = std::any_of(plan.required.begin(), plan.required.end(),
                                    [&](uint32_t ci) { return blob->in_flight_.count(ci) != 0; });
        for (uint32_t ci : plan.required) {
            blob->in_flight_[ci].push_back(request);
            ++request->remaining;
        }
        // Under the lock, so before any chunk it waits for can complete it (request->done).
        if (read && !plan.required.empty()) readers_.waitBegan();
        // Read-ahead for a sequential reader that has to wait. Not on hits: that saves a few
        // misses of a full read but fetched half as much again at a container's start (the
        // demo: 12 MB instead of 8 MB of 60 MB), and fetching little is the point.
        if (read && !plan.required.empty()) {
            std::vector<FetchRun> ahead = planner_.ahead(d.chunks, offset, [&](uint32_t ci) {
                if (blob->cache().isPresent(ci)) return ChunkState::Present;
                const bool planned = std::any_of(plan.runs.begin(), plan.runs.end(), [&](const FetchRun& r) {
                    return ci >= r.first && ci < r.first + r.count;
                });
                return planned || blob->in_flight_.count(ci) != 0 ? ChunkState::InFlight : ChunkState::Missing;
            });
            plan.runs.insert(plan.runs.end(), ahead.begin(), ahead.end());
        }
        for (const FetchRun& run : plan.runs) {
            for (uint32_t ci = run.first; ci < run.first + run.count; ++ci) blob->in_flight_.try_emplace(ci);
        }
        // Under the lock: the cache collector, which takes it too, then sees the chunks as used
        // and leaves them alone while the kernel reads what it is about to be allowed to.
        blob->use_.touch(used.begin, used.end);
    }
    // Hit or miss is plan.required, not request->remaining: once the lock is released a worker
    // finishing a chunk this request waits for may already have completed it, and then a hit
    // would complete it twice.
    if (plan.required.empty()) {
        if (read) {
            blob->counters().hits++;
            blob->counters().bytes_from_cache += length;
        }
        (*answer)(0);
    } else if (read) {
        blob->counters().misses++;
    }
    // Always: the runs' chunks are in in_flight_ now, so no other request will fetch them. A
    // fill's runs wait behind readers' own, and one becomes theirs once a reader waits for it.
    for (const FetchRun& run : plan.runs) {
        if (read) {
            queueRun(blob, run, FetchQueue::Priority::OnDemand, false, true);
        } else {
            queueRun(blob, run, FetchQueue::Priority::PrefetchTable, false, true,
                     [this, blob, run] { return hasWaiters(*blob, run.first, run.first + run.count, true); });
        }
    }
    if (awaits_others) queue_->recheck();  // a queued prefetch request may be this miss's now
    // Last, off the path of the answer and the fetches.
    if (!read) return;
    for (const auto& [trace, index] : found->traces) trace->record(index, used.begin, used.end);
}

uint32_t ChunkFetcher::prefetch(const std::shared_ptr<CachedBlob>& blob, uint32_t first, uint32_t count,
                                FetchQueue::Priority priority) {
    const BlobDescriptor& d = blob->descriptor();
    std::vector<FetchRun> runs;
    uint32_t queued = 0;
    {
        std::lock_guard lock(blob->mutex_);
        const uint32_t end = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{first} + count, d.chunks.size()));
        for (uint32_t ci = first; ci < end; ++ci) {
            if (blob->cache().isPresent(ci) || blob->in_flight_.count(ci) != 0) continue;
            blob->in_flight_.try_emplace(ci);
            planner_.appendToRuns(runs, d.chunks, ci);
            ++queued;
        }
    }
    for (const FetchRun& run : runs) {
        queueRun(blob, run, priority, true, priority != FetchQueue::Priority::Prefetch,
                 [this, blob, run] { return hasWaiters(*blob, run.first, run.first + run.count); });
    }
    return queued;
}

void ChunkFetcher::queueRun(const std::shared_ptr<CachedBlob>& blob, const FetchRun& run,
                            FetchQueue::Priority priority, bool prefetch, bool stream, std::function<bool()> awaited) {
    bool queued = false;
    bool failed = false;  // else dropped by a stopped queue
    try {
        queued = queue_->push(
            priority, [this, blob, run, prefetch, stream] { fetchRun(blob, run, prefetch, stream); }, std::move(awaited));
    } catch (const std::exception& e) {
        log::error("blob {} chunks {}..{}: cannot queue their fetch: {}", blob->descriptor().id, run.first,
                   run.first + run.count - 1, e.what());
        failed = true;
    }
    if (!queued) finishChunks(*blob, run.first, run.count, EIO, failed ? ErrorCount::Awaited : ErrorCount::None);
}

struct ChunkFetcher::RunProgress {
    FetchBuffers& buffers;
    std::span<const uint8_t> fetched;  // the run's stored bytes, as they arrive
    bool prefetch = false;
    uint32_t next = 0;       // the next chunk to decode
    uint32_t unwritten = 0;  // decoded chunks from here to `next` are not written yet
    uint32_t batch_end = 0;  // the chunks of the batch being decoded end here
    uint64_t base = 0;       // the batch's offset in the cache file
    std::span<uint8_t> batch{};
    bool stalled = false;  // the rest waits until the transfer is over
    size_t filled = 0;     // bytes of the run that arrived, as last reported
};

void ChunkFetcher::fetchRun(const std::shared_ptr<CachedBlob>& blob, FetchRun run, bool prefetch, bool stream) {
    // The link and the CPU are not spent on data that could only be thrown away (and a reader
    // joining the run as it failed would get EIO). A reader's request comes after the kernel
    // opened the object, so none is lost: its chunks are fetched for it then.
    if (prefetch && dropUnwritable(*blob, run)) return;
    if (diskJustFull()) {
        if (const auto held_back = blob->write_failures_.admit()) {
            log::error("blob {} chunks {}..{}: not fetched, the cache's disk is full; readers get EIO{}",
                       blob->descriptor().id, run.first, run.first + run.count - 1,
                       RepeatedFailureLog::heldBack(*held_back, "cache write failures of this blob"));
        }
        finishChunks(*blob, run.first, run.count, EIO);
        return;
    }
    const BlobDescriptor& d = blob->descriptor();
    const auto buffers = buffers_.take();
    const std::span<uint8_t> fetched =
        buffers->fetched.get(run.length <= kKeepBuffer ? run.length : std::max<size_t>(run.length, kMaxRun))
            .first(run.length);
    RunProgress progress{
        .buffers = *buffers, .fetched = fetched, .prefetch = prefetch, .next = run.first, .unwritten = run.first,
        .batch_end = run.first};
    // Chunks are decoded as their bytes arrive: a reader waiting for one near the start of a large
    // range gets it once its bytes are in, not once the whole range is. This runs on this thread
    // while the backend's transfer goes on, so nothing may be thrown out of it; a chunk that has to
    // be fetched again is left for after the transfer.
    const uint32_t end = run.first + run.count;
    const auto arrived = [&](size_t filled) -> size_t {
        progress.filled = filled;
        if (!progress.stalled) {
            try {
                decodeArrived(*blob, run, progress, filled, false);
            } catch (...) {
                progress.stalled = true;
            }
        }
        // Woken again once the next chunk is in, not for every piece of it.
        if (progress.stalled || progress.next == end) return SIZE_MAX;
        const rafs::BlobChunk& next = d.chunks[progress.next];
        return static_cast<size_t>(next.compressed_offset + next.compressed_size - run.offset);
    };
    try {
        const auto took = timedRead(*blob, run.offset, fetched, stream ? Backend::Arrived(arrived) : Backend::Arrived());
        blob->counters().bytes_fetched += run.length;
        if (prefetch) prefetch_range_.record(run.length, took);
    } catch (const std::exception& e) {
        if (const auto held_back = blob->backend_failures_.admit()) {
            log::error("blob {}: fetching {} bytes at {} (chunks {}..{}): {}{}", d.id, run.length, run.offset,
                       run.first, end - 1, e.what(), RepeatedFailureLog::heldBack(*held_back, "backend failures of this blob"));
        }
        // What arrived before the failure was verified: it stays.
        blob->counters().bytes_fetched += progress.filled;
        writeDecoded(*blob, progress, progress.next);
        finishChunks(*blob, progress.next, end - progress.next, EIO);
        return;
    }
    decodeArrived(*blob, run, progress, run.length, true);
}

void ChunkFetcher::decodeArrived(CachedBlob& blob, const FetchRun& run, RunProgress& progress, size_t filled,
                                 bool transfer_over) {
    const BlobDescriptor& d = blob.descriptor();
    RunProgress& p = progress;
    const uint32_t end = run.first + run.count;
    while (p.next < end) {
        const uint32_t ci = p.next;
        const rafs::BlobChunk& c = d.chunks[ci];
        if (c.compressed_offset + c.compressed_size - run.offset > filled) break;
        if (ci == p.batch_end) {
            // A batch: chunks whose extents lie back to back, decoded into one buffer as they lie
            // in the cache file, written at once.
            // Taken whole or not at all: the buffer may be gone if getting a larger one failed.
            const uint64_t base = c.uncompressed_offset;
            uint32_t last = ci + 1;
            while (last < end && d.chunks[last].uncompressed_offset == FetchPlanner::extentEnd(d.chunks[last - 1]) &&
                   FetchPlanner::extentEnd(d.chunks[last]) - base <= kMaxBatch) {
                ++last;
            }
            p.batch = p.buffers.decoded.get(FetchPlanner::extentEnd(d.chunks[last - 1]) - base);
            p.base = base;
            p.batch_end = last;
        }
        const std::span<uint8_t> extent =
            p.batch.subspan(c.uncompressed_offset - p.base, FetchPlanner::extentEnd(c) - c.uncompressed_offset);
        const std::span<const uint8_t> stored = p.fetched.subspan(c.compressed_offset - run.offset, c.compressed_size);
        bool good = true;
        if (transfer_over) {
            good = decode(blob, ci, stored, extent);
        } else if (decodeInto(blob, ci, stored, extent)) {
            // A reader of a chunk decoded before it does not wait for the transfer's end.
            if (p.unwritten < ci && hasWaiters(blob, p.unwritten, ci)) writeDecoded(blob, p, ci);
            p.stalled = true;
            return;
        }
        if (!good) {
            writeDecoded(blob, p, ci);
            finishChunks(blob, ci, 1, EIO, ErrorCount::All);
            p.unwritten = ci + 1;
        } else if (ci + 1 == p.batch_end || hasWaiters(blob, p.unwritten, ci + 1)) {
            // A reader waiting for a decoded chunk gets it now, not after the rest of the batch:
            // also one that came for a chunk decoded earlier in the batch.
            writeDecoded(blob, p, ci + 1);
        }
        p.next = ci + 1;
        if (p.prefetch) {
            blob.counters().prefetched_chunks++;
            blob.counters().prefetched_bytes += c.compressed_size;
        }
    }
    // The rest of the run is still to come: a reader that came meanwhile for a decoded chunk.
    if (!transfer_over && p.unwritten < p.next && hasWaiters(blob, p.unwritten, p.next)) {
        writeDecoded(blob, p, p.next);
    }
}

void ChunkFetcher::writeDecoded(CachedBlob& blob, RunProgress& progress, uint32_t upto) {
    if (upto <= progress.unwritten) return;
    const BlobDescriptor& d = blob.descriptor();
    writeChunks(blob, progress.unwritten, upto - progress.unwritten,
                progress.batch.subspan(d.chunks[progress.unwritten].uncompressed_offset - progress.base));
    progress.unwritten = upto;
}

std::optional<std::string> ChunkFetcher::decodeInto(CachedBlob& blob, uint32_t ci, std::span<const uint8_t> stored,
                                                    std::span<uint8_t> extent) {
    const BlobDescriptor& d = blob.descriptor();
    const rafs::BlobChunk& c = d.chunks[ci];
    std::optional<std::string> problem;
    {
        struct Slot {
            std::counting_semaphore<>& decoders;
            explicit Slot(std::counting_semaphore<>& s) : decoders(s) { decoders.acquire(); }
            ~Slot() { decoders.release(); }
            Slot(const Slot&) = delete;
            Slot& operator=(const Slot&) = delete;
        } slot(decoders_);
        problem = verifyChunk(d.compressor, d.digester, c, d.digests[ci], stored, extent.first(c.uncompressed_size));
    }
    if (!problem) std::memset(extent.data() + c.uncompressed_size, 0, extent.size() - c.uncompressed_size);
    return problem;
}

// Decodes and verifies one chunk into its zero-padded extent, fetching it alone again while
// retries remain. False (logged) if it stays bad.
bool ChunkFetcher::decode(CachedBlob& blob, uint32_t ci, std::span<const uint8_t> stored, std::span<uint8_t> extent) {
    const BlobDescriptor& d = blob.descriptor();
    const rafs::BlobChunk& c = d.chunks[ci];
    std::optional<std::string> problem = decodeInto(blob, ci, stored, extent);
    std::vector<uint8_t> again;
    for (unsigned attempt = 0; problem && attempt < options_.retries; ++attempt) {
        log::warn("blob {} chunk {} (uncompressed offset {}): {}; fetching it again", d.id, ci,
                  c.uncompressed_offset, *problem);
        try {
            again.resize(c.compressed_size);
            timedRead(blob, c.compressed_offset, again, {}, true);
            blob.counters().bytes_fetched += again.size();
            problem = decodeInto(blob, ci, again, extent);
        } catch (const std::exception& e) {
            problem = e.what();
        }
    }
    if (problem) {
        log::error("blob {} chunk {} (uncompressed offset {}, compressed {}+{}): {}; readers get EIO",
                   d.id, ci, c.uncompressed_offset, c.compressed_offset, c.compressed_size, *problem);
        return false;
    }
    return true;
}

// Writes decoded chunks [first, first + count) and completes them (with EIO if the write fails).
void ChunkFetcher::writeChunks(CachedBlob& blob, uint32_t first, uint32_t count, std::span<const uint8_t> extents) {
    if (count == 0) return;
    const BlobDescriptor& d = blob.descriptor();
    const std::span<const uint8_t> bytes =
        extents.first(FetchPlanner::extentEnd(d.chunks[first + count - 1]) - d.chunks[first].uncompressed_offset);
    const auto write = [&] { blob.cache().writeExtents(first, count, bytes); };
    try {
        try {
            write();
        } catch (const rafs::SystemError& e) {
            // ENOBUFS: cachefiles' anonymous fds once the cache's file system is past bstop.
            if (!isNoSpace(e.code()) || !no_space_ || !no_space_()) throw;
            write();  // once: the collector freed space
        }
        if (disk_full_at_.load(std::memory_order_relaxed) != 0) disk_full_at_.store(0, std::memory_order_relaxed);
    } catch (const std::exception& e) {
        const auto* system = dynamic_cast<const rafs::SystemError*>(&e);
        if (system != nullptr && isNoSpace(system->code())) {
            disk_full_at_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
        }
        if (const auto held_back = blob.write_failures_.admit()) {
            log::error("blob {} chunks {}..{}: cache write failed: {}; readers get EIO{}", d.id, first, first + count - 1,
                       e.what(), RepeatedFailureLog::heldBack(*held_back, "cache write failures of this blob"));
        }
        finishChunks(blob, first, count, EIO);
        return;
    }
    blob.use_.touch(first, first + count);
    finishChunks(blob, first, count, 0);
}

uint64_t ChunkFetcher::discardIdle(CachedBlob& blob, uint32_t first, uint32_t count, uint32_t used_before) {
    BlobCache& cache = blob.cache();
    std::lock_guard lock(blob.mutex_);
    if (!blob.chunksMayBeFreedLocked()) return 0;
    const uint32_t end = std::min(first + count, cache.chunkCount());
    const auto idle = [&](uint32_t ci) {
        return cache.isPresent(ci) && blob.in_flight_.count(ci) == 0 && blob.use_.last(ci) < used_before;
    };
    uint64_t freed = 0;
    for (uint32_t ci = first; ci < end;) {
        if (!idle(ci)) {
            ++ci;
            continue;
        }
        uint32_t run_end = ci + 1;
        while (run_end < end && idle(run_end)) ++run_end;
        blob.completed_ = false;
        freed += cache.discard(ci, run_end - ci);
        ci = run_end;
    }
    return freed;
}

bool ChunkFetcher::dropUnwritable(CachedBlob& blob, const FetchRun& run) {
    if (blob.cache().file().writable()) return false;
    std::lock_guard lock(blob.mutex_);
    if (hasWaitersLocked(blob, run.first, run.first + run.count, false)) return false;
    for (uint32_t ci = run.first; ci < run.first + run.count; ++ci) blob.in_flight_.erase(ci);
    return true;
}

bool ChunkFetcher::hasWaiters(CachedBlob& blob, uint32_t first, uint32_t end, bool readers_only) {
    std::lock_guard lock(blob.mutex_);
    return hasWaitersLocked(blob, first, end, readers_only);
}

bool ChunkFetcher::hasWaitersLocked(const CachedBlob& blob, uint32_t first, uint32_t end, bool readers_only) {
    for (uint32_t ci = first; ci < end; ++ci) {
        const auto it = blob.in_flight_.find(ci);
        if (it == blob.in_flight_.end() || it->second.empty()) continue;
        if (!readers_only || std::any_of(it->second.begin(), it->second.end(),
                                         [](const std::shared_ptr<PendingRequest>& r) { return r->reader; })) {
            return true;
        }
    }
    return false;
}

bool ChunkFetcher::diskJustFull() const {
    const int64_t at = disk_full_at_.load(std::memory_order_relaxed);
    if (at == 0) return false;
    const auto since = std::chrono::steady_clock::now() - std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(at));
    return since < kFullDiskPause;
}

void ChunkFetcher::finishChunks(CachedBlob& blob, uint32_t first, uint32_t count, int error, ErrorCount counted) {
    std::vector<std::shared_ptr<PendingRequest>> ready;
    {
        std::lock_guard lock(blob.mutex_);
        uint32_t asked = 0;  // chunks someone waits for; the rest came along (amplification, read-ahead)
        for (uint32_t ci = first; ci < first + count; ++ci) {
            auto it = blob.in_flight_.find(ci);
            if (it == blob.in_flight_.end()) continue;
            if (!it->second.empty()) ++asked;
            for (auto& request : it->second) {
                if (error != 0) request->error = error;
                if (--request->remaining == 0) ready.push_back(request);
            }
            blob.in_flight_.erase(it);
        }
        if (error != 0 && counted != ErrorCount::None) blob.counters().errors += counted == ErrorCount::All ? count : asked;
        if (error == 0 && !blob.completed_ && blob.cache().complete()) {
            blob.completed_ = true;
            // Under the lock: discardIdle, which takes it too, sees the blob as unmarked only
            // once it is (or is about to be), never a blob being unmarked as it punches holes.
            blob.notifyComplete();
        }
    }
    for (auto& request : ready) request->done(request->error);
}

}  // namespace rafsd
