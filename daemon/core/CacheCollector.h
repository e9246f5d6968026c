// Keeps the cache dir within cache.max_size. When the dir grows past the high watermark it
// removes, least recently used first, the caches no mounted image uses (whole blobs, whole fscache
// volumes, bootstraps kept or extracted for images no longer mounted: UnusedCaches), then frees the least recently used chunks of mounted blobs whose cache
// file rafsd owns (ChunkFetcher::discardIdle), down to the low watermark. Chunks read or written
// within keep_recent seconds, and chunks being fetched, are never freed. The same runs when a
// cache write finds the disk full (then the write is tried once more), and on `rafsctl gc`.
//
// Crash safety comes from the layers below: a chunk's bit is cleared before its range is punched
// (BlobCache::discard), and a blob's chunk map goes before its data file, so a crash at any point
// leaves bits only over data; a bit whose data went anyway is dropped when the blob is opened
// again (BlobCache::validate).
#pragma once

#include "daemon/core/CachedBlob.h"
#include "daemon/core/ChunkFetcher.h"
#include "daemon/core/RepeatedFailureLog.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace rafsd {

struct CachePolicy {
    uint64_t max_size = 0;  // 0: unbounded, nothing is collected but on request or a full disk
    uint64_t high = 0;      // bytes: collection starts above this ...
    uint64_t low = 0;       // ... and frees down to this
    uint32_t keep_recent = 10;  // seconds
};

// Cache data no mounted image uses, removable whole.
struct UnusedCache {
    std::string name;       // what it is, for the log and gc's report
    uint64_t bytes = 0;     // space it takes
    int64_t last_use = 0;   // when it was last written (seconds since the epoch)
    std::function<void()> remove;  // throws Error, e.g. when another process holds it
    // For a dry run: throws the Error remove() would throw now, removing nothing (none: it would not).
    std::function<void()> check = {};
};

// One on-disk layout of cache data: lists what is not in use.
class UnusedCaches {
public:
    virtual ~UnusedCaches() = default;
    // The caches none of whose blobs is among `in_use` (CacheCollector keys: a blob id, or
    // "fscache:<volume>/<blob id>"). Runs under the collector's lock, while no blob is opened.
    virtual std::vector<UnusedCache> list(const std::set<std::string>& in_use) = 0;
    // Bytes of cache data of this layout that no file under the cache dir shows (the kernel's
    // unlinked cache files of fscache objects in use): counted toward max_size all the same.
    virtual uint64_t unlistedBytes() { return 0; }
};

enum class GcTrigger { Auto, Manual, NoSpace };
std::string_view gcTriggerName(GcTrigger trigger);

struct GcReport {
    bool dry_run = false;
    uint64_t size_before = 0;
    uint64_t size_after = 0;  // a dry run: the size it would leave
    std::vector<std::pair<std::string, uint64_t>> removed;  // unused caches: name, bytes
    uint64_t chunk_bytes = 0;  // chunks of mounted blobs freed
    uint32_t chunk_blobs = 0;  // in this many blobs
};

struct CacheCounters {
    std::atomic<uint64_t> runs_auto{0};
    std::atomic<uint64_t> runs_manual{0};
    std::atomic<uint64_t> runs_no_space{0};
    std::atomic<uint64_t> removed_caches{0};
    std::atomic<uint64_t> removed_bytes{0};
    std::atomic<uint64_t> freed_chunk_bytes{0};
};

class CacheCollector {
public:
    // `dir`: the cache dir. `also_counted`: directories elsewhere whose files the layouts may remove
    // too (the state dir's kept bootstraps); their size counts toward max_size.
    CacheCollector(std::filesystem::path dir, CachePolicy policy, ChunkFetcher& fetcher,
                   std::vector<std::filesystem::path> also_counted = {});
    ~CacheCollector();  // stop()
    CacheCollector(const CacheCollector&) = delete;
    CacheCollector& operator=(const CacheCollector&) = delete;

    void addLayout(std::shared_ptr<UnusedCaches> layout);

    // A blob being opened, under `key`: its files count as in use from now on, and as long as the
    // blob given to done() lives.
    class Opening {
    public:
        Opening(CacheCollector& owner, std::string key);
        ~Opening();
        Opening(const Opening&) = delete;
        Opening& operator=(const Opening&) = delete;
        void done(const std::shared_ptr<CachedBlob>& blob);

    private:
        CacheCollector& owner_;
        std::string key_;
    };

    GcReport collect(GcTrigger trigger, bool dry_run);
    // ChunkFetcher::onNoSpace: collects (unless another thread just did) and says whether to retry.
    // Never after stop(): a stop may fill cache files that must then keep every chunk.
    bool freeForWrite();

    // The size on disk of every file under the cache dir and the also-counted dirs, and of the
    // layouts' unlisted data.
    uint64_t size() const;
    const CachePolicy& policy() const { return policy_; }
    const CacheCounters& counters() const { return counters_; }

    // Checks the size every `interval` and collects past the high watermark (max_size != 0 only).
    void start(std::chrono::seconds interval);
    // Ends that, and collection for a full disk.
    void stop();

private:
    std::set<std::string> inUse();  // mutex_ held
    GcReport collectLocked(GcTrigger trigger, bool dry_run);
    // Frees chunks of mounted blobs, least recently used first, until `need` bytes.
    void freeChunks(uint64_t need, bool dry_run, GcReport& report);

    const std::filesystem::path dir_;
    const std::vector<std::filesystem::path> also_counted_;
    const CachePolicy policy_;
    ChunkFetcher& fetcher_;
    CacheCounters counters_;
    mutable std::mutex layouts_mutex_;  // layouts_: size() runs outside collections too
    std::vector<std::shared_ptr<UnusedCaches>> layouts_;
    std::vector<std::shared_ptr<UnusedCaches>> layouts() const;
    std::mutex mutex_;  // one collection at a time; guards the tables below
    std::map<std::string, std::weak_ptr<CachedBlob>> blobs_;
    std::multiset<std::string> opening_;
    std::atomic<uint64_t> no_space_runs_{0};
    // Over the bound with nothing left to free (everything in use, or fscache blobs of mounted
    // images, whose ranges rafsd cannot free): said every few minutes, not every interval.
    RepeatedFailureLog over_bound_{std::chrono::minutes(5)};
    // A full disk with nothing to free: every write tries a collection, each logged would flood.
    RepeatedFailureLog nothing_freed_;
    std::mutex wake_mutex_;
    std::condition_variable wake_;
    std::atomic<bool> stopping_{false};  // set under wake_mutex_; freeForWrite reads it without
    std::thread thread_;
};

}  // namespace rafsd
