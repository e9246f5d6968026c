#include "daemon/core/ChunkFetcher.h"

#include "builder/format/Error.h"
#include "daemon/core/ChunkVerifier.h"
#include "daemon/core/Log.h"

#include <algorithm>
#include <cerrno>

namespace rafsd {

namespace {
constexpr uint64_t kMaxRun = 4u << 20;  // one backend range at most
}

ChunkFetcher::ChunkFetcher(const FetchOptions& options)
    : options_(options), planner_(options.amplify, std::max(kMaxRun, options.amplify)),
      queue_(std::make_unique<FetchQueue>(options.threads)) {}

ChunkFetcher::~ChunkFetcher() { queue_.reset(); }

uint32_t ChunkFetcher::addImage(std::vector<std::shared_ptr<CachedBlob>> blobs) {
    std::lock_guard lock(images_mutex_);
    for (size_t i = 0; i < images_.size(); ++i) {
        if (images_[i].empty()) {
            images_[i] = std::move(blobs);
            return static_cast<uint32_t>(i);
        }
    }
    images_.push_back(std::move(blobs));
    return static_cast<uint32_t>(images_.size() - 1);
}

void ChunkFetcher::removeImage(uint32_t image) {
    std::lock_guard lock(images_mutex_);
    if (image < images_.size()) images_[image].clear();
}

std::shared_ptr<CachedBlob> ChunkFetcher::blobOf(uint32_t image, uint32_t blob) {
    std::lock_guard lock(images_mutex_);
    if (image >= images_.size() || blob >= images_[image].size()) return nullptr;
    return images_[image][blob];
}

void ChunkFetcher::makePresent(uint32_t image, uint32_t blob_index, uint64_t offset,
                               uint64_t length, Completion done) {
    std::shared_ptr<CachedBlob> blob = blobOf(image, blob_index);
    if (!blob) {
        log::error("request for unknown blob {} of image {}", blob_index, image);
        done(EIO);
        return;
    }
    const BlobDescriptor& d = blob->descriptor();
    if (offset >= d.uncompressed_size) {
        done(0);  // past the data: the cache file's tail is zeros already
        return;
    }
    length = std::min(length, d.uncompressed_size - offset);

    auto request = std::make_shared<PendingRequest>();
    request->done = std::move(done);
    FetchPlan plan;
    {
        std::lock_guard lock(blob->mutex_);
        plan = planner_.plan(d.chunks, offset, length, [&](uint32_t ci) {
            if (blob->cache().isPresent(ci)) return ChunkState::Present;
            return blob->in_flight_.count(ci) != 0 ? ChunkState::InFlight : ChunkState::Missing;
        });
        for (uint32_t ci : plan.required) {
            blob->in_flight_[ci].push_back(request);
            ++request->remaining;
        }
        // A reader that waits is likely to read on: keep the next window coming behind this one.
        if (!plan.required.empty()) {
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
    }
    // Hit or miss is plan.required, not request->remaining: once the lock is released a worker
    // finishing a chunk this request waits for may already have completed it, and then a hit
    // would complete it twice.
    if (plan.required.empty()) {
        blob->counters().hits++;
        blob->counters().bytes_from_cache += length;
        request->done(0);
    } else {
        blob->counters().misses++;
    }
    // Always: the runs' chunks are in in_flight_ now, so no other request will fetch them.
    for (const FetchRun& run : plan.runs) {
        queue_->push(FetchQueue::Priority::OnDemand, [this, blob, run] { fetchRun(blob, run, false); });
    }
}

uint32_t ChunkFetcher::prefetch(const std::shared_ptr<CachedBlob>& blob, uint32_t first, uint32_t count) {
    const BlobDescriptor& d = blob->descriptor();
    std::vector<FetchRun> runs;
    uint32_t queued = 0;
    {
        std::lock_guard lock(blob->mutex_);
        const uint32_t end = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{first} + count, d.chunks.size()));
        for (uint32_t ci = first; ci < end; ++ci) {
            if (blob->cache().isPresent(ci) || blob->in_flight_.count(ci) != 0) continue;
            blob->in_flight_.try_emplace(ci);
            const rafs::BlobChunk& c = d.chunks[ci];
            if (!runs.empty() && runs.back().first + runs.back().count == ci &&
                runs.back().offset + runs.back().length == c.compressed_offset &&
                runs.back().length + c.compressed_size <= kMaxRun) {
                ++runs.back().count;
                runs.back().length += c.compressed_size;
            } else {
                runs.push_back({ci, 1, c.compressed_offset, c.compressed_size});
            }
            ++queued;
        }
    }
    for (const FetchRun& run : runs) {
        queue_->push(FetchQueue::Priority::Prefetch, [this, blob, run] { fetchRun(blob, run, true); });
    }
    return queued;
}

void ChunkFetcher::fetchRun(const std::shared_ptr<CachedBlob>& blob, FetchRun run, bool prefetch) {
    const BlobDescriptor& d = blob->descriptor();
    std::vector<uint8_t> buffer(run.length);
    try {
        blob->backend().read(d.id, run.offset, buffer);
        blob->counters().bytes_fetched += run.length;
    } catch (const std::exception& e) {
        log::error("blob {}: fetching {} bytes at {} (chunks {}..{}): {}", d.id, run.length,
                   run.offset, run.first, run.first + run.count - 1, e.what());
        for (uint32_t ci = run.first; ci < run.first + run.count; ++ci) finishChunk(*blob, ci, EIO);
        return;
    }
    for (uint32_t ci = run.first; ci < run.first + run.count; ++ci) {
        const rafs::BlobChunk& c = d.chunks[ci];
        fetchOne(*blob, ci, std::span<const uint8_t>(buffer).subspan(c.compressed_offset - run.offset, c.compressed_size));
        if (prefetch) blob->counters().prefetched_chunks++;
    }
}

// Verifies one chunk (fetching it alone again while retries remain), writes it, completes it.
void ChunkFetcher::fetchOne(CachedBlob& blob, uint32_t ci, std::span<const uint8_t> stored) {
    const BlobDescriptor& d = blob.descriptor();
    const rafs::BlobChunk& c = d.chunks[ci];
    std::vector<uint8_t> data;
    std::vector<uint8_t> again;
    std::optional<std::string> problem =
        verifyChunk(d.compressor, d.digester, c, d.digests[ci], stored, data);
    for (unsigned attempt = 0; problem && attempt < options_.retries; ++attempt) {
        log::warn("blob {} chunk {} (uncompressed offset {}): {}; fetching it again", d.id, ci,
                  c.uncompressed_offset, *problem);
        try {
            again.resize(c.compressed_size);
            blob.backend().read(d.id, c.compressed_offset, again);
            blob.counters().bytes_fetched += again.size();
            problem = verifyChunk(d.compressor, d.digester, c, d.digests[ci], again, data);
        } catch (const std::exception& e) {
            problem = e.what();
        }
    }
    if (problem) {
        log::error("blob {} chunk {} (uncompressed offset {}, compressed {}+{}): {}; readers get EIO",
                   d.id, ci, c.uncompressed_offset, c.compressed_offset, c.compressed_size, *problem);
        finishChunk(blob, ci, EIO);
        return;
    }
    try {
        blob.cache().write(ci, data);
    } catch (const std::exception& e) {
        log::error("blob {} chunk {}: cache write failed: {}", d.id, ci, e.what());
        finishChunk(blob, ci, EIO);
        return;
    }
    finishChunk(blob, ci, 0);
}

void ChunkFetcher::finishChunk(CachedBlob& blob, uint32_t ci, int error) {
    std::vector<std::shared_ptr<PendingRequest>> ready;
    bool now_complete = false;
    {
        std::lock_guard lock(blob.mutex_);
        auto it = blob.in_flight_.find(ci);
        if (it != blob.in_flight_.end()) {
            for (auto& request : it->second) {
                if (error != 0) request->error = error;
                if (--request->remaining == 0) ready.push_back(request);
            }
            blob.in_flight_.erase(it);
        }
        if (error != 0) blob.counters().errors++;
        if (error == 0 && !blob.completed_ && blob.cache().complete()) {
            blob.completed_ = true;
            now_complete = true;
        }
    }
    for (auto& request : ready) request->done(request->error);
    if (now_complete && blob.on_complete_) blob.on_complete_();
}

}  // namespace rafsd
