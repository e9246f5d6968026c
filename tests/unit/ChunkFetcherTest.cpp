#include "daemon/core/ChunkFetcher.h"

#include "format/Error.h"
#include "tests/unit/ZeroBlob.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace rafsd;
using rafsd::test::NullCacheFile;
using rafsd::test::ZeroBlob;

namespace {

constexpr uint64_t kChunk = 4096;
const std::string kBlobId(64, 'f');

// A blob of zeros. Its first read parks the worker that makes it in the middle of the test
// thread's next makePresent, and wakes it again right after that call unlocks the blob (see
// below).
class ParkingBackend : public Backend {
public:
    explicit ParkingBackend(int cpu) : cpu_(cpu) {}

    void read(const std::string&, uint64_t, std::span<uint8_t> out) override {
        std::memset(out.data(), 0, out.size());
        if (parked_.exchange(true)) return;  // only the first read parks
        // On the test thread's CPU and real-time, this worker runs the moment it is runnable,
        // preempting the test thread: when its sleep ends (inside the test thread's critical
        // section) and when that thread's unlock wakes it.
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(static_cast<size_t>(cpu_), &set);
        if (::sched_setaffinity(0, sizeof set, &set) != 0) error_ = errno;
        const sched_param fifo{1};
        if (const int rc = ::pthread_setschedparam(::pthread_self(), SCHED_FIFO, &fifo); rc != 0) error_ = rc;
        timespec deadline{};
        if (::clock_gettime(CLOCK_MONOTONIC, &deadline) != 0) error_ = errno;
        deadline.tv_nsec += kPark.count();
        if (deadline.tv_nsec >= 1'000'000'000) {
            deadline.tv_sec += 1;
            deadline.tv_nsec -= 1'000'000'000;
        }
        sleeping_.store(true);
        int rc = 0;
        while ((rc = ::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, nullptr)) == EINTR) {}
        if (rc != 0) error_ = rc;
    }
    uint64_t size(const std::string&) override { return 0; }
    std::string describe() const override { return "parking test backend"; }

    // The parked worker is asleep: the test thread may start the call it is to interrupt.
    bool sleeping() const { return sleeping_.load(); }
    int error() const { return error_.load(); }

    // Much shorter than the critical section it has to end in.
    static constexpr std::chrono::nanoseconds kPark{200'000};

private:
    int cpu_;
    std::atomic<bool> parked_{false};
    std::atomic<bool> sleeping_{false};
    std::atomic<int> error_{0};
};

// Pins the calling thread to one CPU until destroyed.
class PinnedThread {
public:
    PinnedThread() {
        if (::sched_getaffinity(0, sizeof saved_, &saved_) != 0) rafs::failErrno("sched_getaffinity");
        cpu_ = ::sched_getcpu();
        if (cpu_ < 0) rafs::failErrno("sched_getcpu");
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(static_cast<size_t>(cpu_), &one);
        if (::sched_setaffinity(0, sizeof one, &one) != 0) rafs::failErrno("sched_setaffinity");
    }
    ~PinnedThread() {
        if (::sched_setaffinity(0, sizeof saved_, &saved_) != 0) WARN("cannot restore the test thread's CPUs");
    }
    PinnedThread(const PinnedThread&) = delete;
    PinnedThread& operator=(const PinnedThread&) = delete;
    int cpu() const { return cpu_; }

private:
    cpu_set_t saved_{};
    int cpu_ = -1;
};

// Whether this process may make threads real-time (root, CAP_SYS_NICE or RLIMIT_RTPRIO).
bool canUseRealTime() {
    const sched_param fifo{1};
    if (::pthread_setschedparam(::pthread_self(), SCHED_FIFO, &fifo) != 0) return false;
    const sched_param other{0};
    if (const int rc = ::pthread_setschedparam(::pthread_self(), SCHED_OTHER, &other); rc != 0)
        rafs::failErrno("pthread_setschedparam(SCHED_OTHER)", rc);
    return true;
}

}  // namespace

// A request that waits only for chunks other requests are fetching can be completed by the worker
// that finishes them as soon as makePresent unlocks the blob, before makePresent has decided what
// to do next. It must still be completed exactly once, and the read-ahead runs it planned must
// still be fetched (lost, their chunks stayed in flight for good and their readers hung).
//
// The interleaving is forced, not hoped for: the worker fetching the awaited chunk is made
// real-time on the test thread's CPU and parked until a moment inside the second request's
// critical section (made long by a range of many present chunks). It preempts the test thread
// there, blocks on the blob's mutex, and preempts it again when the unlock wakes it.
TEST_CASE("a request completed by a worker as makePresent unlocks is completed once and its runs are fetched",
          "[chunkfetcher]") {
    if (!canUseRealTime()) {
        WARN("skipped: forcing the interleaving needs SCHED_FIFO (root or CAP_SYS_NICE)");
        return;
    }
    // 4 KiB chunks, all present but two. The window is long so that planning a window's worth
    // of present chunks keeps the blob locked far longer than ParkingBackend::kPark.
    constexpr uint64_t kWindow = 512ull << 20;
    constexpr uint32_t kPerWindow = kWindow / kChunk;
    // The first request reads [0, kAwaited] and fetches kAwaited; starting at 0, it reads on from
    // nothing, so it reads nothing ahead. The second one reads kWindow bytes from kAwaited, waiting
    // for kAwaited alone; it reads on from present chunks and kAhead, one window ahead of it, is
    // missing, so it queues kAhead as read-ahead. kAwaited is the first chunk it plans: the worker
    // marks the chunk present before it takes the lock to complete it, so a chunk planned later
    // would already count as present.
    constexpr uint32_t kAwaited = 16;
    constexpr uint32_t kAhead = kAwaited + kPerWindow;
    constexpr uint32_t kChunks = 2 * kPerWindow + 2 * kAwaited;

    const ZeroBlob zero(kBlobId, kChunks, static_cast<uint32_t>(kChunk));
    const BlobDescriptor& d = zero.descriptor;
    const std::vector<ChunkExtent>& extents = zero.extents;

    // Every chunk present but two, made once (a write per bit); each attempt starts from a copy.
    rafs::test::TempDir dir;
    const std::filesystem::path model = dir.path() / "model.chunkmap";
    {
        BlobCache cache(std::make_unique<NullCacheFile>(d.uncompressed_size),
                        ReadinessBitmap::open(model, kBlobId, kChunks, d.uncompressed_size), extents);
        for (uint32_t i = 0; i < kChunks; ++i) {
            if (i != kAwaited && i != kAhead) cache.markPresent(i);
        }
        cache.flush();
    }

    PinnedThread pinned;
    bool interleaved = false;
    // Another process can delay the test thread past the worker's wake-up: then the awaited chunk
    // is simply present when the second request looks, and the attempt proves nothing.
    for (int attempt = 0; attempt < 5 && !interleaved; ++attempt) {
        const std::filesystem::path bitmap = dir.path() / ("attempt" + std::to_string(attempt));
        std::filesystem::copy_file(model, bitmap);
        auto backend = std::make_shared<ParkingBackend>(pinned.cpu());
        auto blob = std::make_shared<CachedBlob>(
            d,
            std::make_unique<BlobCache>(std::make_unique<NullCacheFile>(d.uncompressed_size),
                                        ReadinessBitmap::open(bitmap, kBlobId, kChunks, d.uncompressed_size),
                                        extents),
            backend);
        // Before the fetcher, so they outlive its worker.
        const std::thread::id self = std::this_thread::get_id();
        std::atomic<bool> inside{false};
        std::atomic<int> calls{0};
        std::atomic<int> failure{0};
        std::atomic<bool> from_worker{false};
        ChunkFetcher fetcher(FetchOptions{.amplify = kWindow, .threads = 1, .retries = 0});
        const uint32_t image = fetcher.addImage({blob});

        auto first = std::make_shared<std::promise<int>>();
        fetcher.makePresent(image, 0, 0, uint64_t{kAwaited + 1} * kChunk,
                            [first](int error) { first->set_value(error); });
        while (!backend->sleeping()) std::this_thread::yield();

        inside.store(true);
        // Records only: Catch2 assertions are not thread-safe, and this may run on the worker.
        fetcher.makePresent(image, 0, uint64_t{kAwaited} * kChunk, kWindow, [&](int result) {
            if (result != 0) failure.store(result);
            if (inside.load() && std::this_thread::get_id() != self) from_worker.store(true);
            calls.fetch_add(1);
        });
        inside.store(false);
        std::future<int> first_done = first->get_future();
        REQUIRE(first_done.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        CHECK(first_done.get() == 0);
        REQUIRE(backend->error() == 0);
        interleaved = from_worker.load();
        // Every call has happened: the worker's before makePresent returned, any other inside it.
        CHECK(calls.load() == 1);
        CHECK(failure.load() == 0);

        auto ahead = std::make_shared<std::promise<int>>();
        fetcher.makePresent(image, 0, uint64_t{kAhead} * kChunk, kChunk,
                            [ahead](int error) { ahead->set_value(error); });
        std::future<int> ahead_done = ahead->get_future();
        REQUIRE(ahead_done.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        CHECK(ahead_done.get() == 0);
    }
    CHECK(interleaved);
}

namespace {

// Keeps what is written, and the writes themselves.
class RecordingCacheFile : public CacheFile {
public:
    explicit RecordingCacheFile(uint64_t size) : data_(size, 0) {}
    std::string name() const override { return "recording cache file"; }
    uint64_t size() const override { return data_.size(); }
    bool hasData(uint64_t, uint64_t) const override { return true; }
    void sync() override {}

    std::vector<std::pair<uint64_t, uint64_t>> writes() const {
        std::lock_guard lock(mutex_);
        return writes_;
    }
    std::vector<uint8_t> data() const {
        std::lock_guard lock(mutex_);
        return data_;
    }

private:
    void writeBlocks(uint64_t offset, std::span<const uint8_t> bytes) override {
        std::lock_guard lock(mutex_);
        writes_.emplace_back(offset, bytes.size());
        std::memcpy(data_.data() + offset, bytes.data(), bytes.size());
    }
    mutable std::mutex mutex_;
    std::vector<uint8_t> data_;
    std::vector<std::pair<uint64_t, uint64_t>> writes_;
};

// `count` uncompressed chunks of 4 KiB back to back, chunk i made of bytes i + 1: its
// descriptor, extents and stored bytes.
struct PatternBlob {
    BlobDescriptor d;
    std::vector<ChunkExtent> extents;
    std::vector<uint8_t> stored;

    explicit PatternBlob(uint32_t count) {
        d.id = kBlobId;
        d.compressor = rafs::Compressor::None;
        d.digester = rafs::Digester::Blake3;
        d.chunk_size = kChunk;
        d.uncompressed_size = count * kChunk;
        for (uint32_t i = 0; i < count; ++i) {
            const uint64_t at = uint64_t{i} * kChunk;
            const std::vector<uint8_t> content(kChunk, static_cast<uint8_t>(i + 1));
            d.chunks.push_back({at, static_cast<uint32_t>(kChunk), at, static_cast<uint32_t>(kChunk), false, false, 0});
            d.digests.push_back(rafs::digestOf(rafs::Digester::Blake3, content));
            extents.push_back({at, static_cast<uint32_t>(kChunk)});
            stored.insert(stored.end(), content.begin(), content.end());
        }
    }

    std::shared_ptr<CachedBlob> cached(const std::filesystem::path& bitmap, std::unique_ptr<CacheFile> file,
                                       std::shared_ptr<Backend> backend) const {
        const auto count = static_cast<uint32_t>(d.chunks.size());
        return std::make_shared<CachedBlob>(
            d, std::make_unique<BlobCache>(std::move(file), ReadinessBitmap::open(bitmap, kBlobId, count, d.uncompressed_size),
                                           extents),
            std::move(backend));
    }
};

class MemoryBackend : public Backend {
public:
    explicit MemoryBackend(std::vector<uint8_t> blob) : blob_(std::move(blob)) {}
    void read(const std::string&, uint64_t offset, std::span<uint8_t> out) override {
        std::memcpy(out.data(), blob_.data() + offset, out.size());
    }
    uint64_t size(const std::string&) override { return blob_.size(); }
    std::string describe() const override { return "memory test backend"; }

private:
    std::vector<uint8_t> blob_;
};

// A blob of `chunks` zero chunks of kChunk, stored uncompressed in memory, cached at `map`.
std::shared_ptr<CachedBlob> zeroBlob(const std::filesystem::path& map, uint32_t chunks) {
    return ZeroBlob(kBlobId, chunks, kChunk)
        .cached(map, std::make_shared<MemoryBackend>(std::vector<uint8_t>(chunks * kChunk, 0)));
}

int waitFor(ChunkFetcher& fetcher, uint32_t image, uint64_t offset, uint64_t length) {
    auto done = std::make_shared<std::promise<int>>();
    fetcher.makePresent(image, 0, offset, length, [done](int error) { done->set_value(error); });
    std::future<int> result = done->get_future();
    REQUIRE(result.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    return result.get();
}

}  // namespace

// Decoded chunks that lie back to back go to the cache file in one write, except that a chunk a
// reader waits for is written at once, and a chunk that stays bad fails alone.
TEST_CASE("a run is written in batches around waited-for and bad chunks", "[chunkfetcher]") {
    constexpr uint32_t kChunks = 12;
    constexpr uint32_t kBad = 5;
    PatternBlob pattern(kChunks);
    std::vector<uint8_t> stored = pattern.stored;
    stored[kBad * kChunk + 100] ^= 0xff;  // bad on every fetch

    rafs::test::TempDir dir;
    auto file = std::make_unique<RecordingCacheFile>(kChunks * kChunk);
    RecordingCacheFile& recorded = *file;
    auto blob = pattern.cached(dir.path() / "map", std::move(file), std::make_shared<MemoryBackend>(stored));
    ChunkFetcher fetcher(FetchOptions{.amplify = kChunks * kChunk, .threads = 1, .retries = 1});
    const uint32_t image = fetcher.addImage({blob});

    // One run of every chunk; the reader waits for chunk 0 only.
    CHECK(waitFor(fetcher, image, 0, kChunk) == 0);
    // Behind chunk 0 in the same run: done once the run is.
    CHECK(waitFor(fetcher, image, (kChunks - 1) * kChunk, kChunk) == 0);

    const std::vector<std::pair<uint64_t, uint64_t>> expected{
        {0, kChunk}, {kChunk, (kBad - 1) * kChunk}, {(kBad + 1) * kChunk, (kChunks - kBad - 1) * kChunk}};
    CHECK(recorded.writes() == expected);
    const std::vector<uint8_t> data = recorded.data();
    for (uint32_t i = 0; i < kChunks; ++i) {
        INFO("chunk " << i);
        CHECK(blob->cache().isPresent(i) == (i != kBad));
        const uint8_t want = i == kBad ? 0 : static_cast<uint8_t>(i + 1);
        CHECK(std::all_of(data.begin() + i * kChunk, data.begin() + (i + 1) * kChunk,
                          [&](uint8_t b) { return b == want; }));
    }
    CHECK(blob->counters().errors == 1);
    // The bad chunk is fetched again for the next reader, and fails again.
    CHECK(waitFor(fetcher, image, kBad * kChunk, kChunk) == EIO);
}

namespace {

// A backend whose usual source has a damaged copy of the blob (a mirror) and whose other source
// (the registry) the good one: readElsewhere() reads the latter.
class DamagedSourceBackend final : public Backend {
public:
    DamagedSourceBackend(std::vector<uint8_t> good, std::vector<uint8_t> damaged)
        : good_(std::move(good)), damaged_(std::move(damaged)) {}
    void read(const std::string&, uint64_t offset, std::span<uint8_t> out) override {
        std::memcpy(out.data(), damaged_.data() + offset, out.size());
    }
    void readElsewhere(const std::string&, uint64_t offset, std::span<uint8_t> out) override {
        ++elsewhere;
        std::memcpy(out.data(), good_.data() + offset, out.size());
    }
    uint64_t size(const std::string&) override { return good_.size(); }
    std::string describe() const override { return "damaged source test backend"; }
    std::atomic<int> elsewhere{0};

private:
    std::vector<uint8_t> good_, damaged_;
};

}  // namespace

// A chunk that fails its digest is fetched again from another source than the one that damaged it.
TEST_CASE("a chunk that fails its digest is read again elsewhere", "[chunkfetcher]") {
    PatternBlob pattern(4);
    std::vector<uint8_t> damaged = pattern.stored;
    damaged[2 * kChunk + 7] ^= 0x01;
    rafs::test::TempDir dir;
    auto backend = std::make_shared<DamagedSourceBackend>(pattern.stored, damaged);
    auto blob = pattern.cached(dir.path() / "map", std::make_unique<RecordingCacheFile>(4 * kChunk), backend);
    ChunkFetcher fetcher(FetchOptions{.amplify = 4 * kChunk, .threads = 1, .retries = 1});
    const uint32_t image = fetcher.addImage({blob});
    CHECK(waitFor(fetcher, image, 0, 4 * kChunk) == 0);
    CHECK(backend->elsewhere == 1);
    for (uint32_t i = 0; i < 4; ++i) CHECK(blob->cache().isPresent(i));
    CHECK(blob->counters().errors == 0);
}

namespace {

// Serves a blob; its first read comes in two parts: the first `split` bytes (optionally with one
// byte of them damaged), then, once the test opens it, the rest, or a failed transfer. Later
// reads are served whole, undamaged.
class SplitBackend final : public Backend {
public:
    enum class Rest { Arrives, Fails };
    SplitBackend(std::vector<uint8_t> blob, size_t split, Rest rest, std::optional<size_t> damaged = std::nullopt)
        : blob_(std::move(blob)), split_(split), rest_(rest), damaged_(damaged) {}

    void read(const std::string& id, uint64_t offset, std::span<uint8_t> out) override {
        readArriving(id, offset, out, [](size_t) { return SIZE_MAX; });
    }
    void readArriving(const std::string&, uint64_t offset, std::span<uint8_t> out, const Arrived& arrived) override {
        std::memcpy(out.data(), blob_.data() + offset, out.size());
        {
            std::lock_guard lock(mutex_);
            reads_.emplace_back(offset, out.size());
        }
        if (split_done_.exchange(true)) {
            arrived(out.size());
            return;
        }
        if (damaged_) out[*damaged_] ^= 0xff;
        arrived(split_);
        std::unique_lock lock(mutex_);
        opened_.wait(lock, [this] { return open_; });
        if (rest_ == Rest::Fails) rafs::fail("the transfer was cut");
        arrived(0);  // as a retried transfer: the same bytes again
        arrived(out.size());
    }
    std::vector<std::pair<uint64_t, uint64_t>> reads() {
        std::lock_guard lock(mutex_);
        return reads_;
    }
    uint64_t size(const std::string&) override { return blob_.size(); }
    std::string describe() const override { return "split test backend"; }
    void open() {
        std::lock_guard lock(mutex_);
        open_ = true;
        opened_.notify_all();
    }

private:
    std::vector<uint8_t> blob_;
    size_t split_;
    Rest rest_;
    std::optional<size_t> damaged_;
    std::atomic<bool> split_done_{false};
    std::mutex mutex_;
    std::condition_variable opened_;
    bool open_ = false;
    std::vector<std::pair<uint64_t, uint64_t>> reads_;
};

// Opens the backend when the test ends, failed or not, before the fetcher joins its threads.
struct OpenAtEnd {
    SplitBackend& backend;
    ~OpenAtEnd() { backend.open(); }
};

std::future<int> request(ChunkFetcher& fetcher, uint32_t image, uint32_t ci) {
    auto done = std::make_shared<std::promise<int>>();
    fetcher.makePresent(image, 0, ci * kChunk, kChunk, [done](int error) { done->set_value(error); });
    return done->get_future();
}

bool answered(std::future<int>& result, std::chrono::milliseconds within) {
    return result.wait_for(within) == std::future_status::ready;
}

// kChunks pattern chunks behind a SplitBackend, read by a fetcher whose miss of chunk 0 fetches
// them all in one run; constructed once that miss is answered, from the first part of the run.
struct SplitRun {
    static constexpr uint32_t kChunks = 8;
    PatternBlob pattern{kChunks};
    rafs::test::TempDir dir;
    RecordingCacheFile* recorded = nullptr;
    std::shared_ptr<SplitBackend> backend;
    std::shared_ptr<CachedBlob> blob;
    ChunkFetcher fetcher;
    uint32_t image = 0;
    OpenAtEnd opener;  // last: the backend opens before the fetcher joins its threads

    SplitRun(size_t split, SplitBackend::Rest rest, unsigned retries, std::optional<size_t> damaged = std::nullopt)
        : backend(std::make_shared<SplitBackend>(pattern.stored, split, rest, damaged)),
          fetcher(FetchOptions{.amplify = kChunks * kChunk, .threads = 1, .retries = retries}),
          opener{*backend} {
        auto file = std::make_unique<RecordingCacheFile>(kChunks * kChunk);
        recorded = file.get();
        blob = pattern.cached(dir.path() / "map", std::move(file), backend);
        image = fetcher.addImage({blob});
        std::future<int> first = request(fetcher, image, 0);
        REQUIRE(answered(first, std::chrono::seconds(10)));
        CHECK(first.get() == 0);
    }
};

}  // namespace

// A network range is decoded as it arrives: a reader waiting for a chunk near its start is
// answered once that chunk's bytes are in, not when the whole range is.
TEST_CASE("a chunk of a run is written once its bytes arrive, before the rest of the run", "[chunkfetcher]") {
    SplitRun r(2 * kChunk + 100, SplitBackend::Rest::Arrives, 0);
    auto&& [fetcher, image, backend, blob] = std::tie(r.fetcher, r.image, r.backend, r.blob);
    constexpr uint32_t kChunks = SplitRun::kChunks;
    // Decoded, not written: its batch goes on. Its reader is answered when the next bytes come.
    std::future<int> second = request(fetcher, image, 1);
    CHECK_FALSE(blob->cache().isPresent(2));  // 100 bytes of it arrived
    std::future<int> last = request(fetcher, image, kChunks - 1);
    CHECK_FALSE(answered(last, std::chrono::milliseconds(50)));

    backend->open();
    REQUIRE(answered(second, std::chrono::seconds(10)));
    CHECK(second.get() == 0);
    REQUIRE(answered(last, std::chrono::seconds(10)));
    CHECK(last.get() == 0);
    // Chunk 1 is written once its reader has asked and more bytes come (here a transfer that
    // starts again: its count of 0).
    const std::vector<std::pair<uint64_t, uint64_t>> expected{{0, kChunk}, {kChunk, kChunk}, {2 * kChunk, 6 * kChunk}};
    CHECK(r.recorded->writes() == expected);
    CHECK((r.recorded->data() == r.pattern.stored));
    CHECK(blob->counters().errors == 0);
}

// What arrived of a range that then fails was verified: it stays, and only the rest is an error.
TEST_CASE("a transfer cut short keeps the chunks that arrived whole", "[chunkfetcher]") {
    SplitRun r(3 * kChunk + 100, SplitBackend::Rest::Fails, 0);
    auto&& [fetcher, image, backend, blob] = std::tie(r.fetcher, r.image, r.backend, r.blob);
    constexpr uint32_t kChunks = SplitRun::kChunks;
    std::future<int> cut = request(fetcher, image, 3);
    backend->open();
    REQUIRE(answered(cut, std::chrono::seconds(10)));
    CHECK(cut.get() == EIO);
    for (uint32_t ci = 0; ci < kChunks; ++ci) {
        INFO("chunk " << ci);
        CHECK(blob->cache().isPresent(ci) == (ci < 3));
    }
    // The chunk the reader waited for; the rest of the run came along with it.
    CHECK(blob->counters().errors == 1);
}

// A chunk that arrives damaged is not fetched again alone inside the transfer it came in: the
// chunks behind it wait for the transfer to end, then the damaged one is fetched again, alone.
TEST_CASE("a chunk that arrives damaged is fetched again alone after its transfer", "[chunkfetcher]") {
    SplitRun r(4 * kChunk, SplitBackend::Rest::Arrives, 1, kChunk + 10);
    auto&& [fetcher, image, backend, blob] = std::tie(r.fetcher, r.image, r.backend, r.blob);
    constexpr uint32_t kChunks = SplitRun::kChunks;
    std::future<int> behind = request(fetcher, image, 2);  // its bytes are in, behind the damaged chunk
    CHECK_FALSE(answered(behind, std::chrono::milliseconds(50)));
    backend->open();
    REQUIRE(answered(behind, std::chrono::seconds(10)));
    CHECK(behind.get() == 0);
    CHECK(waitFor(fetcher, image, kChunk, kChunk) == 0);
    CHECK(waitFor(fetcher, image, (kChunks - 1) * kChunk, kChunk) == 0);  // the run's end
    CHECK((r.recorded->data() == r.pattern.stored));
    const std::vector<std::pair<uint64_t, uint64_t>> reads{{0, kChunks * kChunk}, {kChunk, kChunk}};
    CHECK(backend->reads() == reads);
    CHECK(blob->counters().errors == 0);
}

// The engine's completion callback (the fanotify engine unmarks the file) is set after the mount,
// while the fetch threads may be completing the blob for another image that shares it: a blob
// completed in between must still get it, at once, or its reads would raise events for good.
TEST_CASE("the completion callback runs when the blob completes, or at once if it completed before",
          "[chunkfetcher]") {
    constexpr uint32_t kChunks = 4;
    rafs::test::TempDir dir;
    auto make = [&](const std::string& name) { return zeroBlob(dir.path() / name, kChunks); };
    ChunkFetcher fetcher(FetchOptions{.amplify = 0, .threads = 1, .retries = 0});

    SECTION("set before") {
        auto blob = make("before");
        const uint32_t image = fetcher.addImage({blob});
        int calls = 0;
        blob->onComplete([&] { ++calls; });
        CHECK(waitFor(fetcher, image, 0, (kChunks - 1) * kChunk) == 0);
        CHECK(calls == 0);
        CHECK(waitFor(fetcher, image, (kChunks - 1) * kChunk, kChunk) == 0);
        CHECK(calls == 1);
    }
    SECTION("set after") {
        auto blob = make("after");
        const uint32_t image = fetcher.addImage({blob});
        CHECK(waitFor(fetcher, image, 0, kChunks * kChunk) == 0);
        int calls = 0;
        blob->onComplete([&] { ++calls; });
        CHECK(calls == 1);
    }
}

// A request names a blob by one image's index, but images that share the blob share its cache file,
// so the engines cannot tell which mount read it: the read counts in the trace of each of them.
TEST_CASE("a read of a shared blob is in the trace of every image that uses it", "[chunkfetcher]") {
    constexpr uint32_t kChunks = 4;
    rafs::test::TempDir dir;
    auto zeros = std::make_shared<MemoryBackend>(std::vector<uint8_t>(kChunks * kChunk, 0));
    auto shared = ZeroBlob(kBlobId, kChunks, kChunk).cached(dir.path() / "map", zeros);
    auto other = ZeroBlob(std::string(64, 'e'), kChunks, kChunk).cached(dir.path() / "other", zeros);
    ChunkFetcher fetcher(FetchOptions{.amplify = 0, .threads = 1, .retries = 0});
    const uint32_t first = fetcher.addImage({shared});
    const uint32_t second = fetcher.addImage({other, shared});  // the shared blob is its blob 1

    CHECK(waitFor(fetcher, first, 2 * kChunk, kChunk) == 0);
    using Trace = std::vector<std::pair<uint32_t, uint32_t>>;
    CHECK(fetcher.trace(first) == Trace{{0, 2}});
    CHECK(fetcher.trace(second) == Trace{{1, 2}});
}

// A stop fills the cache files of a mount still in use (FanotifyEngine::stop): every chunk, present
// ones left as they are, and not a read: nothing in the trace, no miss counted.
TEST_CASE("a fill makes the whole blob present without counting as a read", "[chunkfetcher]") {
    constexpr uint32_t kChunks = 6;
    rafs::test::TempDir dir;
    auto blob = zeroBlob(dir.path() / "map", kChunks);
    ChunkFetcher fetcher(FetchOptions{.amplify = 0, .threads = 2, .retries = 0});
    const uint32_t image = fetcher.addImage({blob});
    CHECK(waitFor(fetcher, image, 2 * kChunk, kChunk) == 0);
    REQUIRE(blob->counters().misses.load() == 1);

    std::promise<int> filled;
    fetcher.fill(image, 0, [&](int error) { filled.set_value(error); });
    auto result = filled.get_future();
    REQUIRE(result.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    CHECK(result.get() == 0);
    CHECK(blob->cache().bitmap().count() == kChunks);
    CHECK(blob->counters().misses.load() == 1);
    CHECK(blob->counters().hits.load() == 0);
    using Trace = std::vector<std::pair<uint32_t, uint32_t>>;
    CHECK(fetcher.trace(image) == Trace{{0, 2}});

    SECTION("an unknown blob fails") {
        std::promise<int> unknown;
        fetcher.fill(image, 1, [&](int error) { unknown.set_value(error); });
        CHECK(unknown.get_future().get() == EIO);
    }
}

namespace {

// Frees ranges, as a sparse file does; what it holds does not matter here.
class FreeingCacheFile final : public NullCacheFile {
public:
    using NullCacheFile::NullCacheFile;
    bool canDiscard() const override { return true; }
    void discard(uint64_t, uint64_t) override {}
};

// Zeros; while closed, a read waits for open().
class GateBackend final : public Backend {
public:
    void read(const std::string&, uint64_t, std::span<uint8_t> out) override {
        std::unique_lock lock(mutex_);
        ++readers_;
        changed_.notify_all();
        changed_.wait(lock, [this] { return open_; });
        std::memset(out.data(), 0, out.size());
    }
    uint64_t size(const std::string&) override { return 0; }
    std::string describe() const override { return "gate test backend"; }
    void setOpen(bool open) {
        std::lock_guard lock(mutex_);
        open_ = open;
        changed_.notify_all();
    }
    bool waitForReaders(int count) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, std::chrono::seconds(10), [&] { return readers_ >= count; });
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    bool open_ = true;
    int readers_ = 0;
};

}  // namespace

// A request's present chunks are kept from the collector only by their use stamps, for keep_recent
// seconds: one freed while the request waits longer for another chunk is fetched again before the
// answer, which would otherwise let the kernel read its hole. Image numbers are reused once an
// image is removed: the request is made again for the blob it was made for, not for whatever blob
// its image number names by then.
TEST_CASE("a chunk freed while its request waits for another is fetched again before the answer", "[chunkfetcher]") {
    constexpr uint32_t kChunks = 2;
    rafs::test::TempDir dir;
    const ZeroBlob zero(kBlobId, kChunks, kChunk);
    const ZeroBlob other_zero(std::string(64, 'b'), kChunks, kChunk);
    auto backend = std::make_shared<GateBackend>();
    auto blob = zero.cached(dir.path() / "map", backend,
                            std::make_unique<FreeingCacheFile>(zero.descriptor.uncompressed_size));
    auto other = other_zero.cached(dir.path() / "other-map", backend,
                                   std::make_unique<FreeingCacheFile>(other_zero.descriptor.uncompressed_size));
    ChunkFetcher fetcher(FetchOptions{.amplify = 0, .threads = 1, .retries = 0});
    const uint32_t image = fetcher.addImage({blob});
    REQUIRE(waitFor(fetcher, image, 0, kChunk) == 0);  // chunk 0 present
    backend->setOpen(false);
    auto done = std::make_shared<std::promise<int>>();
    fetcher.makePresent(image, 0, 0, kChunks * kChunk, [done](int error) { done->set_value(error); });
    REQUIRE(backend->waitForReaders(2));  // chunk 1's fetch waits
    // A full disk's collection, everything older than a second from now: chunk 0.
    CHECK(fetcher.discardIdle(*blob, 0, kChunks, ChunkUse::now() + 1) == kChunk);
    REQUIRE_FALSE(blob->cache().isPresent(0));
    SECTION("its image goes meanwhile, and another takes its number") {
        fetcher.removeImage(image);
        REQUIRE(fetcher.addImage({other}) == image);
    }
    backend->setOpen(true);
    std::future<int> result = done->get_future();
    REQUIRE(result.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    CHECK(result.get() == 0);
    CHECK(blob->cache().isPresent(0));
    CHECK(blob->cache().isPresent(1));
    CHECK_FALSE(other->cache().isPresent(0));
}

// Once a stop has abandoned the fetch queue, it drops what is pushed to it (a request a finishing
// fetch makes again, a prefetch). The chunks of a dropped run were marked in flight: a request
// waiting for them, then or later, fails at once instead of waiting for a fetch that never comes.
TEST_CASE("a run the abandoned queue drops fails its chunks instead of leaving them in flight", "[chunkfetcher]") {
    constexpr uint32_t kChunks = 2;
    rafs::test::TempDir dir;
    auto blob = zeroBlob(dir.path() / "map", kChunks);
    ChunkFetcher fetcher(FetchOptions{.amplify = 0, .threads = 1, .retries = 0});
    const uint32_t image = fetcher.addImage({blob});
    fetcher.abandonQueued();
    CHECK(fetcher.prefetch(blob, 0, 1) == 1);
    CHECK(waitFor(fetcher, image, 0, kChunk) == EIO);  // the dropped prefetch's chunk
    CHECK(waitFor(fetcher, image, kChunk, kChunk) == EIO);  // the dropped request's own run
    CHECK_FALSE(blob->cache().isPresent(0));
    CHECK(blob->counters().errors == 0);  // a stop, not a failed fetch
}

// A request whose run was queued, not running, when a stop abandoned the queue: it fails at the
// abandon, rather than waiting for a fetch that will never run.
TEST_CASE("a request whose run the abandon drops from the queue fails", "[chunkfetcher]") {
    constexpr uint32_t kChunks = 2;
    rafs::test::TempDir dir;
    const ZeroBlob zero(kBlobId, kChunks, kChunk);
    auto backend = std::make_shared<GateBackend>();
    auto blob = zero.cached(dir.path() / "map", backend,
                            std::make_unique<FreeingCacheFile>(zero.descriptor.uncompressed_size));
    ChunkFetcher fetcher(FetchOptions{.amplify = 0, .threads = 1, .retries = 0});
    const uint32_t image = fetcher.addImage({blob});
    backend->setOpen(false);
    auto first = std::make_shared<std::promise<int>>();
    fetcher.makePresent(image, 0, 0, kChunk, [first](int error) { first->set_value(error); });
    REQUIRE(backend->waitForReaders(1));  // the one thread holds chunk 0's run
    auto queued = std::make_shared<std::promise<int>>();
    fetcher.makePresent(image, 0, kChunk, kChunk, [queued](int error) { queued->set_value(error); });
    std::thread opener([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the abandon has dropped the queue
        backend->setOpen(true);
    });
    fetcher.abandonQueued();
    opener.join();
    std::future<int> dropped = queued->get_future();
    REQUIRE(dropped.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    CHECK(dropped.get() == EIO);
    CHECK(first->get_future().get() == 0);  // the running one ended as it would
    CHECK(blob->counters().errors == 0);
}
