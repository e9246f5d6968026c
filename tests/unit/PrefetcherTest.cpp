#include "daemon/core/Prefetcher.h"

#include "tests/unit/ZeroBlob.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace rafsd;
using rafsd::test::NullCacheFile;
using rafsd::test::ZeroBlob;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kChunk = 4096;
constexpr uint32_t kChunks = 64;

class ZeroBackend : public Backend {
public:
    void read(const std::string&, uint64_t, std::span<uint8_t> out) override { std::memset(out.data(), 0, out.size()); }
    uint64_t size(const std::string&) override { return kChunks * kChunk; }
    std::string describe() const override { return "zeros"; }
};

// Blobs of kChunks uncompressed 4 KiB chunks of zeros, none present, registered with a fetcher
// as one image.
struct TestImage {
    rafs::test::TempDir dir;
    std::vector<std::shared_ptr<CachedBlob>> blobs;
    // No read-ahead: the reader's own miss on chunk 0 fetches chunk 0 alone.
    ChunkFetcher fetcher{FetchOptions{.amplify = kChunk}};
    uint32_t image = 0;

    explicit TestImage(uint32_t count = 1) {
        for (uint32_t i = 0; i < count; ++i) {
            const std::string id(64, static_cast<char>('a' + i));
            blobs.push_back(ZeroBlob(id, kChunks, kChunk).cached(dir.path() / (id + ".chunkmap"),
                                                                 std::make_shared<ZeroBackend>()));
        }
        image = fetcher.addImage(blobs);
    }

    uint32_t present(uint32_t blob = 0) {
        uint32_t n = 0;
        for (uint32_t ci = 0; ci < kChunks; ++ci) n += blobs[blob]->cache().isPresent(ci) ? 1u : 0u;
        return n;
    }

    // Waits up to `limit` for blob `blob` to be complete.
    bool completes(std::chrono::milliseconds limit, uint32_t blob = 0) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            if (blobs[blob]->cache().complete()) return true;
            std::this_thread::sleep_for(5ms);
        }
        return blobs[blob]->cache().complete();
    }
};

// A reader of chunk 0 that asks for it again every few milliseconds until stopped. Busy from the
// moment it is made: its first request is made before the constructor returns (a thread that had
// not run yet would leave the readers quiet on a loaded machine).
class BusyReader {
public:
    explicit BusyReader(TestImage& img) {
        img.fetcher.makePresent(img.image, 0, 0, kChunk, [](int) {});
        thread_ = std::thread([this, &img] {
            while (!stop_) {
                std::this_thread::sleep_for(2ms);
                img.fetcher.makePresent(img.image, 0, 0, kChunk, [](int) {});
            }
        });
    }
    ~BusyReader() { stop(); }
    void stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }

private:
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

}  // namespace

TEST_CASE("a traced image's whole blobs wait while its readers are busy, and come once they are quiet",
          "[prefetcher]") {
    TestImage img;
    BusyReader reader(img);
    Prefetcher prefetcher(img.fetcher, 0, kChunk, 4, 60s);
    prefetcher.add({{img.blobs[0], 0}}, img.blobs);
    std::this_thread::sleep_for(400ms);
    CHECK(img.present() == 1);  // the table's one chunk, nothing of the rest
    reader.stop();
    CHECK(img.completes(10s));
}

TEST_CASE("a traced image's whole blobs wait for a busy start only so long", "[prefetcher]") {
    TestImage img;
    BusyReader reader(img);
    Prefetcher prefetcher(img.fetcher, 0, kChunk, 4, 300ms);
    prefetcher.add({{img.blobs[0], 0}}, img.blobs);
    CHECK(img.completes(10s));  // while the reader is still busy
}

TEST_CASE("an image without a trace has its whole blobs fetched while its readers are busy", "[prefetcher]") {
    TestImage img;
    BusyReader reader(img);
    Prefetcher prefetcher(img.fetcher, 0, kChunk, 4, 60s);
    prefetcher.add({}, img.blobs);
    CHECK(img.completes(10s));
}

TEST_CASE("a traced image's blobs wait for its start once, together", "[prefetcher]") {
    TestImage img(2);
    BusyReader reader(img);
    Prefetcher prefetcher(img.fetcher, 0, kChunk, 4, 1s);
    prefetcher.add({{img.blobs[0], 0}}, img.blobs);
    REQUIRE(img.completes(10s, 0));
    // The second blob's wait ended with the first's, not a second start_wait_max later.
    CHECK(img.completes(500ms, 1));
}
