#include "daemon/core/CacheCollector.h"

#include "format/ByteView.h"
#include "daemon/core/DiskUsage.h"
#include "daemon/core/Log.h"

#include <algorithm>

namespace rafsd {

namespace fs = std::filesystem;

std::string_view gcTriggerName(GcTrigger trigger) {
    switch (trigger) {
    case GcTrigger::Auto: return "auto";
    case GcTrigger::Manual: return "manual";
    case GcTrigger::NoSpace: return "disk full";
    }
    return "auto";
}

CacheCollector::Opening::Opening(CacheCollector& owner, std::string key) : owner_(owner), key_(std::move(key)) {
    std::lock_guard lock(owner_.mutex_);
    owner_.opening_.insert(key_);
}

CacheCollector::Opening::~Opening() {
    std::lock_guard lock(owner_.mutex_);
    owner_.opening_.erase(owner_.opening_.find(key_));
}

void CacheCollector::Opening::done(const std::shared_ptr<CachedBlob>& blob) {
    std::lock_guard lock(owner_.mutex_);
    owner_.blobs_[key_] = blob;
}

CacheCollector::CacheCollector(fs::path dir, CachePolicy policy, ChunkFetcher& fetcher, std::vector<fs::path> also_counted)
    : dir_(std::move(dir)), also_counted_(std::move(also_counted)), policy_(policy), fetcher_(fetcher) {}

CacheCollector::~CacheCollector() { stop(); }

void CacheCollector::addLayout(std::shared_ptr<UnusedCaches> layout) {
    std::lock_guard lock(layouts_mutex_);
    layouts_.push_back(std::move(layout));
}

std::vector<std::shared_ptr<UnusedCaches>> CacheCollector::layouts() const {
    std::lock_guard lock(layouts_mutex_);
    return layouts_;
}

uint64_t CacheCollector::size() const {
    uint64_t bytes = DiskUsage::of(dir_).bytes;
    for (const fs::path& dir : also_counted_) bytes += DiskUsage::of(dir).bytes;
    for (const auto& layout : layouts()) bytes += layout->unlistedBytes();
    return bytes;
}

std::set<std::string> CacheCollector::inUse() {
    std::set<std::string> keys(opening_.begin(), opening_.end());
    for (auto it = blobs_.begin(); it != blobs_.end();) {
        if (it->second.expired()) {
            it = blobs_.erase(it);
        } else {
            keys.insert(it->first);
            ++it;
        }
    }
    return keys;
}

GcReport CacheCollector::collect(GcTrigger trigger, bool dry_run) {
    std::lock_guard lock(mutex_);
    return collectLocked(trigger, dry_run);
}

bool CacheCollector::freeForWrite() {
    if (stopping_.load()) return false;
    const uint64_t seen = no_space_runs_.load();
    std::lock_guard lock(mutex_);
    // Another fetch thread found the disk full at the same time and has freed space since.
    if (no_space_runs_.load() != seen) return true;
    const GcReport report = collectLocked(GcTrigger::NoSpace, false);
    ++no_space_runs_;
    return report.size_after < report.size_before;
}

GcReport CacheCollector::collectLocked(GcTrigger trigger, bool dry_run) {
    GcReport report;
    report.dry_run = dry_run;
    report.size_before = size();
    report.size_after = report.size_before;
    uint64_t target = 0;  // collect down to this
    switch (trigger) {
    case GcTrigger::Auto:
        if (policy_.max_size == 0 || report.size_before <= policy_.high) return report;
        target = policy_.low;
        if (!dry_run) ++counters_.runs_auto;
        break;
    case GcTrigger::Manual:
        // Every unused cache goes; mounted blobs' chunks only past the low watermark.
        target = policy_.max_size == 0 ? report.size_before : std::min(report.size_before, policy_.low);
        if (!dry_run) ++counters_.runs_manual;
        break;
    case GcTrigger::NoSpace:
        // A quarter of the cache, or down to the low watermark if that frees more.
        target = report.size_before - report.size_before / 4;
        if (policy_.max_size != 0) target = std::min(target, policy_.low);
        if (!dry_run) ++counters_.runs_no_space;
        break;
    }
    const std::set<std::string> in_use = inUse();
    std::vector<UnusedCache> unused;
    for (const auto& layout : layouts()) {
        try {
            std::vector<UnusedCache> more = layout->list(in_use);
            std::move(more.begin(), more.end(), std::back_inserter(unused));
        } catch (const std::exception& e) {
            log::error("cache gc: {}", e.what());
        }
    }
    std::stable_sort(unused.begin(), unused.end(), [](const UnusedCache& a, const UnusedCache& b) { return a.last_use < b.last_use; });
    uint64_t left = report.size_before;
    uint64_t removed_bytes = 0;
    for (UnusedCache& cache : unused) {
        if (trigger != GcTrigger::Manual && left <= target) break;
        try {
            if (!dry_run) {
                cache.remove();
            } else if (cache.check) {
                cache.check();
            }
        } catch (const std::exception& e) {
            log::warn("cache gc: {} kept: {}", cache.name, e.what());
            continue;
        }
        left -= std::min(left, cache.bytes);
        removed_bytes += cache.bytes;
        report.removed.emplace_back(cache.name, cache.bytes);
        if (!dry_run) {
            ++counters_.removed_caches;
            counters_.removed_bytes += cache.bytes;
        }
    }
    if (left > target) freeChunks(left - target, dry_run, report);
    left -= std::min(left, report.chunk_bytes);
    report.size_after = dry_run ? left : size();
    if (!dry_run && trigger == GcTrigger::Auto && report.size_after > policy_.high && over_bound_.admit()) {
        std::string dirs = dir_.string();
        for (const fs::path& dir : also_counted_) dirs += " and " + dir.string();
        log::warn("the cache ({}) takes {} bytes, over cache.max_size's high watermark ({} bytes), and nothing more can "
                  "be freed now: what is left is in use, recently used, or fscache data of mounted images",
                  dirs, report.size_after, policy_.high);
    }
    const bool freed = !report.removed.empty() || report.chunk_bytes != 0;
    std::optional<uint64_t> held_back = 0;
    if (!freed && trigger == GcTrigger::NoSpace) held_back = nothing_freed_.admit();
    if (!dry_run && (freed || trigger != GcTrigger::Auto) && held_back) {
        log::info("cache gc ({}): {} -> {} bytes; removed {} unused caches ({} bytes), freed {} bytes of chunks in {} "
                  "mounted blobs{}",
                  gcTriggerName(trigger), report.size_before, report.size_after, report.removed.size(), removed_bytes,
                  report.chunk_bytes, report.chunk_blobs,
                  RepeatedFailureLog::heldBack(*held_back, "collections for a full disk that freed nothing"));
    }
    return report;
}

void CacheCollector::freeChunks(uint64_t need, bool dry_run, GcReport& report) {
    // Early in the process's life only chunks not used since it started (stamp 0) are old enough.
    // At least one second, also with keep_recent 0 (which is for whole unused caches): stamps are
    // whole seconds, and a chunk stamped in the second before may have been read a moment ago by a
    // read the kernel was allowed to make and has not made yet.
    const uint32_t now = ChunkUse::now();
    const uint32_t keep = std::max<uint32_t>(policy_.keep_recent, 1);
    const uint32_t used_before = now > keep ? now - keep : 1;
    struct Candidate {
        uint32_t last_use;
        CachedBlob* blob;
        uint32_t chunk;
        uint32_t bytes;
    };
    std::vector<std::shared_ptr<CachedBlob>> alive;
    std::vector<Candidate> candidates;
    for (const auto& [key, weak] : blobs_) {
        std::shared_ptr<CachedBlob> blob = weak.lock();
        if (!blob || !blob->chunksMayBeFreed()) continue;
        const BlobCache& cache = blob->cache();
        for (uint32_t ci = 0; ci < cache.chunkCount(); ++ci) {
            const uint32_t last = blob->use().last(ci);
            if (!cache.isPresent(ci) || last >= used_before) continue;
            const auto bytes = static_cast<uint32_t>(rafs::alignUp(cache.chunk(ci).size, CacheFile::kBlockSize));
            candidates.push_back({last, blob.get(), ci, bytes});
        }
        alive.push_back(std::move(blob));
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const Candidate& a, const Candidate& b) { return a.last_use < b.last_use; });
    // The least recently used chunks that free `need`, then per blob in runs of adjacent chunks.
    uint64_t chosen_bytes = 0;
    size_t chosen = 0;
    while (chosen < candidates.size() && chosen_bytes < need) chosen_bytes += candidates[chosen++].bytes;
    candidates.resize(chosen);
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
        return a.blob != b.blob ? a.blob < b.blob : a.chunk < b.chunk;
    });
    CachedBlob* previous = nullptr;
    for (size_t i = 0; i < candidates.size();) {
        size_t j = i + 1;
        while (j < candidates.size() && candidates[j].blob == candidates[i].blob &&
               candidates[j].chunk == candidates[j - 1].chunk + 1) {
            ++j;
        }
        CachedBlob& blob = *candidates[i].blob;
        uint64_t freed = 0;
        if (dry_run) {
            for (size_t k = i; k < j; ++k) freed += candidates[k].bytes;
        } else {
            try {
                freed = fetcher_.discardIdle(blob, candidates[i].chunk, static_cast<uint32_t>(j - i), used_before);
            } catch (const std::exception& e) {
                log::error("cache gc: blob {}: {}", blob.descriptor().id, e.what());
            }
            counters_.freed_chunk_bytes += freed;
        }
        if (freed != 0 && &blob != previous) {
            ++report.chunk_blobs;
            previous = &blob;
        }
        report.chunk_bytes += freed;
        i = j;
    }
}

void CacheCollector::start(std::chrono::seconds interval) {
    if (policy_.max_size == 0 || thread_.joinable()) return;
    thread_ = std::thread([this, interval] {
        std::unique_lock lock(wake_mutex_);
        while (!wake_.wait_for(lock, interval, [this] { return stopping_.load(); })) {
            lock.unlock();
            try {
                collect(GcTrigger::Auto, false);
            } catch (const std::exception& e) {
                log::error("cache gc: {}", e.what());
            }
            lock.lock();
        }
    });
}

void CacheCollector::stop() {
    {
        std::lock_guard lock(wake_mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

}  // namespace rafsd
