#include "daemon/core/CacheCollector.h"

#include "daemon/backends/Backend.h"
#include "daemon/core/BlobCacheFiles.h"
#include "format/FileLock.h"
#include "format/UniqueFd.h"
#include "daemon/core/SparseCacheFile.h"
#include "tests/unit/CacheDir.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <thread>

using namespace rafsd;

namespace {

constexpr uint64_t kMiB = 1 << 20;

void writeFile(const std::filesystem::path& path, uint64_t size) {
    std::ofstream out(path, std::ios::binary);
    const std::string block(4096, 'x');
    for (uint64_t done = 0; done < size; done += block.size()) out << block;
}

// Files of the test's dir as unused caches, with the last-use times given.
class FakeLayout : public UnusedCaches {
public:
    FakeLayout(std::filesystem::path dir, std::vector<std::pair<std::string, int64_t>> files)
        : dir_(std::move(dir)), files_(std::move(files)) {}

    std::vector<UnusedCache> list(const std::set<std::string>& in_use) override {
        seen_in_use = in_use;
        std::vector<UnusedCache> out;
        for (const auto& [name, last_use] : files_) {
            const std::filesystem::path path = dir_ / name;
            if (in_use.count(name) != 0 || !std::filesystem::exists(path)) continue;
            out.push_back({name, std::filesystem::file_size(path), last_use, [path] { std::filesystem::remove(path); }});
        }
        return out;
    }

    std::set<std::string> seen_in_use;

private:
    std::filesystem::path dir_;
    std::vector<std::pair<std::string, int64_t>> files_;
};

std::vector<std::string> names(const GcReport& report) {
    std::vector<std::string> out;
    for (const auto& [name, bytes] : report.removed) out.push_back(name);
    return out;
}

class ZeroBackend : public Backend {
public:
    void read(const std::string&, uint64_t, std::span<uint8_t> out) override { std::fill(out.begin(), out.end(), 0); }
    uint64_t size(const std::string&) override { return 0; }
    std::string describe() const override { return "zeros"; }
};

}  // namespace

TEST_CASE("the collector removes unused caches least recently used first, down to the low watermark", "[cache]") {
    rafs::test::CacheDir dir;
    for (const char* name : {"a", "b", "c"}) writeFile(dir.path() / name, kMiB);
    ChunkFetcher fetcher(FetchOptions{.threads = 1});
    CacheCollector collector(dir.path(), CachePolicy{3 * kMiB, 2 * kMiB + kMiB / 2, kMiB + kMiB / 2, 0}, fetcher);
    auto layout = std::make_shared<FakeLayout>(dir.path(), std::vector<std::pair<std::string, int64_t>>{
                                                                {"a", 30}, {"b", 10}, {"c", 20}});
    collector.addLayout(layout);
    REQUIRE(collector.size() >= 3 * kMiB);

    const GcReport dry = collector.collect(GcTrigger::Auto, true);
    CHECK(names(dry) == std::vector<std::string>{"b", "c"});
    CHECK(dry.size_after < dry.size_before);
    CHECK(std::filesystem::exists(dir.path() / "b"));

    {
        CacheCollector::Opening opening(collector, "c");  // being opened: in use
        const GcReport report = collector.collect(GcTrigger::Auto, false);
        CHECK(layout->seen_in_use == std::set<std::string>{"c"});
        CHECK(names(report) == std::vector<std::string>{"b", "a"});
        CHECK(report.size_after < 2 * kMiB);
    }
    CHECK(std::filesystem::exists(dir.path() / "c"));
    CHECK_FALSE(std::filesystem::exists(dir.path() / "a"));
    CHECK(collector.counters().runs_auto == 1);
    CHECK(collector.counters().removed_caches == 2);
    // Below the high watermark: an automatic run does nothing; a manual one removes what is unused.
    CHECK(collector.collect(GcTrigger::Auto, false).removed.empty());
    CHECK(names(collector.collect(GcTrigger::Manual, false)) == std::vector<std::string>{"c"});
}

TEST_CASE("the collector frees the least recently used chunks of mounted blobs, never recent or fetching ones", "[cache]") {
    rafs::test::CacheDir dir;
    constexpr uint32_t kChunks = 8;
    constexpr uint32_t kChunk = 256 * 1024;
    BlobDescriptor d;
    d.id = std::string(64, 'e');
    d.chunk_size = kChunk;
    d.uncompressed_size = uint64_t{kChunks} * kChunk;
    std::vector<ChunkExtent> extents;
    for (uint32_t i = 0; i < kChunks; ++i) {
        const uint64_t at = uint64_t{i} * kChunk;
        d.chunks.push_back({at, kChunk, at, kChunk, false, false, 0});
        d.digests.push_back(rafs::digestOf(rafs::Digester::Blake3, std::vector<uint8_t>(kChunk, 0)));
        extents.push_back({at, kChunk});
    }
    auto cache = std::make_unique<BlobCache>(SparseCacheFile::open(dir.path() / (d.id + ".blob.data"), d.uncompressed_size),
                                             ReadinessBitmap::open(dir.path() / (d.id + ".chunkmap"), d.id, kChunks,
                                                                   d.uncompressed_size),
                                             extents);
    const std::vector<uint8_t> zeros(kChunk, 0);
    for (uint32_t i = 0; i < kChunks; ++i) cache->write(i, zeros);  // cached earlier: never used since
    auto blob = std::make_shared<CachedBlob>(d, std::move(cache), std::make_shared<ZeroBackend>());
    ChunkFetcher fetcher(FetchOptions{.threads = 1});
    const uint32_t image = fetcher.addImage({blob});
    // Chunks 0 and 1 read just now.
    std::promise<int> read;
    fetcher.makePresent(image, 0, 0, 2 * kChunk, [&](int error) { read.set_value(error); });
    REQUIRE(read.get_future().get() == 0);

    // keep_recent 1 h: chunks 2..7 (never used since the start) may go, 0 and 1 not.
    CacheCollector collector(dir.path(), CachePolicy{kMiB, kMiB, kMiB / 2, 3600}, fetcher);
    CacheCollector::Opening opening(collector, d.id);
    opening.done(blob);
    const GcReport dry = collector.collect(GcTrigger::Auto, true);
    CHECK(dry.chunk_bytes == 6 * uint64_t{kChunk});
    CHECK(blob->cache().bitmap().count() == kChunks);
    const GcReport report = collector.collect(GcTrigger::Auto, false);
    CHECK(report.chunk_bytes == 6 * uint64_t{kChunk});
    CHECK(report.chunk_blobs == 1);
    CHECK(blob->cache().isPresent(0));
    CHECK(blob->cache().isPresent(1));
    for (uint32_t i = 2; i < kChunks; ++i) CHECK_FALSE(blob->cache().isPresent(i));
    CHECK_FALSE(blob->cache().file().hasData(2 * uint64_t{kChunk}, kChunk));
    CHECK(collector.counters().freed_chunk_bytes == 6 * uint64_t{kChunk});
    // Freed chunks are fetched again when read.
    std::promise<int> again;
    fetcher.makePresent(image, 0, 4 * uint64_t{kChunk}, kChunk, [&](int error) { again.set_value(error); });
    CHECK(again.get_future().get() == 0);
    CHECK(blob->cache().isPresent(4));

    // keep_recent 0 still keeps a chunk used a moment ago, across the tick of the seconds clock: a
    // read the kernel was allowed to make may not have reached the cache file yet.
    CacheCollector eager(dir.path(), CachePolicy{kChunk, kChunk, 0, 0}, fetcher);
    CacheCollector::Opening eager_opening(eager, d.id);
    eager_opening.done(blob);
    uint32_t used = 0;
    do {  // read again within one second of the clock, whatever the clock does meanwhile
        used = ChunkUse::now();
        std::promise<int> read_again;
        fetcher.makePresent(image, 0, 4 * uint64_t{kChunk}, kChunk, [&](int error) { read_again.set_value(error); });
        REQUIRE(read_again.get_future().get() == 0);
    } while (ChunkUse::now() != used);
    REQUIRE(blob->use().last(4) == used);
    for (int i = 0; i < 300 && ChunkUse::now() == used; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(ChunkUse::now() == used + 1);
    eager.collect(GcTrigger::Auto, false);
    CHECK(blob->cache().isPresent(4));
}

// Another rafsd serving a blob from the same cache dir holds its chunk map's lock (ReadinessBitmap):
// gc keeps the blob, and a dry run must say so too, not that it would remove it.
TEST_CASE("a blob another process serves is kept, and a dry run does not list it", "[cache]") {
    rafs::test::CacheDir dir;
    const std::string id(64, 'a');
    writeFile(dir.path() / (id + ".chunkmap"), 4096);
    writeFile(BlobCacheFiles::dataFile(dir.path(), id), kMiB);
    ChunkFetcher fetcher(FetchOptions{.threads = 1});
    CacheCollector collector(dir.path(), CachePolicy{}, fetcher);
    collector.addLayout(std::make_shared<BlobCacheFiles>(dir.path()));
    {
        // Another open file description: its lock excludes this process's as another process's would.
        rafs::UniqueFd held(::open((dir.path() / (id + ".chunkmap")).c_str(), O_RDWR | O_CLOEXEC));
        REQUIRE(held.get() >= 0);
        REQUIRE(rafs::lockExclusive(held.get(), std::nullopt, "test") == rafs::LockOutcome::Locked);
        CHECK(collector.collect(GcTrigger::Manual, true).removed.empty());
        CHECK(collector.collect(GcTrigger::Manual, false).removed.empty());
        CHECK(std::filesystem::exists(BlobCacheFiles::dataFile(dir.path(), id)));
    }
    CHECK(names(collector.collect(GcTrigger::Manual, true)) == std::vector<std::string>{"blob " + id});
    CHECK(std::filesystem::exists(BlobCacheFiles::dataFile(dir.path(), id)));
    CHECK(names(collector.collect(GcTrigger::Manual, false)) == std::vector<std::string>{"blob " + id});
    CHECK_FALSE(std::filesystem::exists(BlobCacheFiles::dataFile(dir.path(), id)));
}
