// The fscache engine against a fake /dev/cachefiles: the engine serves one end of a SOCK_SEQPACKET
// socketpair (one write is one message, as one read() of the device is), and the test plays the
// kernel on the other end with messages laid out as kernel-abi/cachefiles.h says. The anonymous fds
// of OPENs are dups of the test's own files (O_DIRECT where the file system has it, so a write at
// an unaligned offset fails as it would in the kernel's cache file) or pipes, whose read end tells
// when the engine closed them. Blob data comes from the real ChunkFetcher over an image the builder
// makes; READ completions go to a recorder instead of the ioctl, which only cachefiles' fds have.
#include "format/UniqueFd.h"
#include "daemon/engines/fscache/FscacheCacheFile.h"
#include "daemon/engines/fscache/FscacheEngine.h"

#include "format/Bootstrap.h"
#include "daemon/backends/LocalfsBackend.h"
#include "daemon/core/BlobMetaLoader.h"
#include "daemon/core/ChunkFetcher.h"
#include "tests/unit/ImageTestUtil.h"
#include "tests/unit/OneFileImage.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace rafsd;
using namespace std::chrono_literals;

constexpr uint64_t kBlock = 4096;
constexpr uint32_t kChunkSize = 16 * 1024;
constexpr int kTimeoutMs = 10000;
const std::string kFsid = "unit-fsid";
const std::string kVolume = "erofs," + kFsid;

[[noreturn]] void sysFail(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

// A new descriptor for what `fd` refers to: what the test puts in an OPEN, for the engine to own.
int dupOf(int fd) { return rafs::UniqueFd::duplicate(fd, "a stand-in file").release(); }

bool isOpen(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

// A pipe: its write end stands in for an anonymous fd; closed() tells when every copy of that end
// is closed (the reader then sees end of file), free of fd-number reuse by other threads.
struct Pipe {
    rafs::UniqueFd read_end, write_end;
    Pipe() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) sysFail("pipe2");
        read_end = rafs::UniqueFd(fds[0]);
        write_end = rafs::UniqueFd(fds[1]);
    }
    // Hands the write end over (for the engine to own) and keeps no copy of it.
    int give() { return write_end.release(); }
    bool closed(int timeout_ms = kTimeoutMs) const {
        pollfd p{read_end.get(), POLLIN, 0};
        return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLHUP) != 0;
    }
};

class Message {
public:
    Message(uint32_t msg_id, uint32_t opcode, uint32_t object_id) {
        const cachefiles::Msg header{msg_id, opcode, 0, object_id};
        append(&header, sizeof header);
    }
    Message& append(const void* data, size_t size) {
        const size_t at = bytes_.size();
        bytes_.resize(at + size);
        if (size > 0) std::memcpy(bytes_.data() + at, data, size);
        return *this;
    }
    Message& append(const std::string& text) { return append(text.data(), text.size()); }
    // Sets the header's len to the size, as the kernel does.
    std::vector<std::byte> done() const {
        std::vector<std::byte> bytes = bytes_;
        const auto len = static_cast<uint32_t>(bytes.size());
        std::memcpy(bytes.data() + offsetof(cachefiles::Msg, len), &len, sizeof len);
        return bytes;
    }

private:
    std::vector<std::byte> bytes_;
};

std::vector<std::byte> openMessage(uint32_t msg_id, uint32_t object_id, const std::string& volume,
                                   const std::string& cookie, int fd) {
    const std::string volume_key = volume + '\0';
    const cachefiles::Open open{static_cast<uint32_t>(volume_key.size()), static_cast<uint32_t>(cookie.size()),
                                static_cast<uint32_t>(fd), 0};
    return Message(msg_id, cachefiles::kOpen, object_id).append(&open, sizeof open).append(volume_key).append(cookie).done();
}

std::vector<std::byte> readMessage(uint32_t msg_id, uint32_t object_id, uint64_t offset, uint64_t length) {
    const cachefiles::Read read{offset, length};
    return Message(msg_id, cachefiles::kRead, object_id).append(&read, sizeof read).done();
}

std::vector<std::byte> closeMessage(uint32_t msg_id, uint32_t object_id) {
    return Message(msg_id, cachefiles::kClose, object_id).done();
}

// READ completions the engine made, in place of CACHEFILES_IOC_READ_COMPLETE.
class Completions {
public:
    struct Done {
        int fd;
        bool fd_open;  // the anonymous fd was still open when the READ was completed
    };

    ReadCompleter completer() {
        return [this](int fd, uint32_t msg_id) {
            std::lock_guard lock(mutex_);
            done_[msg_id] = Done{fd, isOpen(fd)};
            ++times_[msg_id];
            cv_.notify_all();
        };
    }

    // How often READ msg_id was completed: a second completion could complete a newer READ that
    // reuses the id.
    int times(uint32_t msg_id) {
        std::lock_guard lock(mutex_);
        return times_.count(msg_id) != 0 ? times_.at(msg_id) : 0;
    }

    std::optional<Done> waitFor(uint32_t msg_id) {
        std::unique_lock lock(mutex_);
        if (!cv_.wait_for(lock, std::chrono::milliseconds(kTimeoutMs), [&] { return done_.count(msg_id) != 0; })) {
            return std::nullopt;
        }
        return done_.at(msg_id);
    }

    bool has(uint32_t msg_id) {
        std::lock_guard lock(mutex_);
        return done_.count(msg_id) != 0;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<uint32_t, int> times_;
    std::map<uint32_t, Done> done_;
};

// Reads blobs from a directory, each read waiting while the gate is closed: keeps a READ pending.
class GatedBackend final : public Backend {
public:
    explicit GatedBackend(fs::path dir) : inner_(std::move(dir)) {}
    void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override {
        {
            std::unique_lock lock(mutex_);
            ++waiting_;
            cv_.notify_all();
            cv_.wait(lock, [this] { return open_; });
            --waiting_;
        }
        inner_.read(blob_id, offset, out);
    }
    uint64_t size(const std::string& blob_id) override { return inner_.size(blob_id); }
    std::string describe() const override { return inner_.describe() + " (gated)"; }

    void close() {
        std::lock_guard lock(mutex_);
        open_ = false;
    }
    void open() {
        std::lock_guard lock(mutex_);
        open_ = true;
        cv_.notify_all();
    }
    bool waitForReader() {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, std::chrono::milliseconds(kTimeoutMs), [this] { return waiting_ > 0; });
    }

private:
    LocalfsBackend inner_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = true;
    int waiting_ = 0;
};

// An image of one file, built by the builder in 16 KiB chunks, served by a started engine on a
// fake device; the test holds the kernel's end.
class EngineFixture {
public:
    EngineFixture() {
        std::mt19937_64 rnd(7);
        source_.resize(10 * kChunkSize + 1234);
        for (auto& b : source_) b = static_cast<uint8_t>(rnd());
        rafs::test::buildOneFileImage(dir_.path(), "data", source_, kChunkSize);
        bootstrap_.emplace(dir_ / "img/image.boot");
        REQUIRE(bootstrap_->blobs().size() == 1);
        const rafs::BootstrapBlob& blob = bootstrap_->blobs()[0];
        blob_id_ = blob.id;
        backend_ = std::make_shared<GatedBackend>(dir_.path() / "img/blobs");
        BlobDescriptor descriptor = loadBlobDescriptor(*bootstrap_, blob, *backend_, dir_.path());
        auto bitmap = ReadinessBitmap::open(dir_.path() / (blob.id + ".chunkmap"), blob.id, blob.chunk_count,
                                            blob.uncompressed_size);
        std::vector<ChunkExtent> extents;
        for (const auto& c : descriptor.chunks) extents.push_back({c.uncompressed_offset, c.uncompressed_size});
        auto object_fd = std::make_shared<ObjectFd>();
        auto cache = std::make_unique<BlobCache>(std::make_unique<FscacheCacheFile>(blob.id, blob.uncompressed_size, object_fd),
                                                 std::move(bitmap), std::move(extents));
        blob_ = std::make_shared<CachedBlob>(std::move(descriptor), std::move(cache), backend_);

        FscacheMount mount;
        mount.image = fetcher_.addImage({blob_});
        mount.fsid = kFsid;
        mount.bootstrap = bootstrap_->bytes();
        mount.mountpoint = dir_.path() / "not-mounted";  // reattach() registers without mount(2)
        mount.blobs.push_back({0, blob.id, blob.uncompressed_size, object_fd});
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) sysFail("socketpair");
        kernel_ = rafs::UniqueFd(fds[0]);
        // The device's read() returns at once when nothing is pending; EAGAIN is its equivalent here.
        if (::fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0) sysFail("fcntl O_NONBLOCK");
        engine_.adopt(FscacheDevice::adopt(fds[1]));
        engine_.reattach(mount);
    }

    ~EngineFixture() {
        backend_->open();  // a failed test may have left a fetch waiting
        engine_.stop();
    }

    FscacheEngine& engine() { return engine_; }
    Completions& completions() { return completions_; }
    GatedBackend& backend() { return *backend_; }
    const std::vector<uint8_t>& source() const { return source_; }
    const rafs::Bootstrap& bootstrap() const { return *bootstrap_; }
    const std::string& blobId() const { return blob_id_; }
    uint64_t blobSize() const { return blob_->descriptor().uncompressed_size; }
    const std::shared_ptr<CachedBlob>& blob() const { return blob_; }
    ChunkFetcher& fetcher() { return fetcher_; }
    std::string path(const std::string& name) const { return dir_ / name; }

    void send(const std::vector<std::byte>& message) {
        const ssize_t n = ::send(kernel_.get(), message.data(), message.size(), MSG_NOSIGNAL);
        if (n != static_cast<ssize_t>(message.size())) sysFail("send to the engine");
    }
    void sendBytes(const void* data, size_t size) {
        if (::send(kernel_.get(), data, size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) sysFail("send");
    }

    // The next command the engine wrote to the device ("" on timeout).
    std::string reply(int timeout_ms = kTimeoutMs) {
        pollfd p{kernel_.get(), POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) != 1) return "";
        char buffer[256];
        const ssize_t n = ::recv(kernel_.get(), buffer, sizeof buffer, 0);
        if (n < 0) sysFail("recv from the engine");
        return std::string(buffer, static_cast<size_t>(n));
    }

    // The engine handles messages in order: once an OPEN sent after others is answered, those were
    // handled. The OPEN names an unknown cookie (its fd is /dev/null).
    void barrier() {
        const rafs::UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (null.get() < 0) sysFail("open /dev/null");
        const uint32_t id = 9000 + barriers_++;
        send(openMessage(id, id, kVolume, "barrier", dupOf(null.get())));
        REQUIRE(reply() == fmt::format("copen {},-2", id));
    }

    // A file sized like the kernel's new cache file for `size` bytes (sparse, rounded up to 4 KiB),
    // opened for direct I/O where the file system allows it, as the kernel writes its cache file.
    rafs::UniqueFd standIn(const std::string& name, uint64_t size) const {
        const std::string file = path(name);
        int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_DIRECT, 0600);
        if (fd < 0 && errno == EINVAL) fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) sysFail("open " + file);
        rafs::UniqueFd owned(fd);
        if (::ftruncate(fd, static_cast<off_t>((size + kBlock - 1) / kBlock * kBlock)) != 0) sysFail("ftruncate");
        return owned;
    }

    // The stand-in's bytes (read through the page cache, which direct writes keep coherent).
    std::vector<uint8_t> contents(const std::string& name) const { return rafs::test::readFile(path(name)); }

private:
    rafs::test::TempDir dir_;
    std::vector<uint8_t> source_;
    std::optional<rafs::Bootstrap> bootstrap_;
    std::string blob_id_;
    std::shared_ptr<GatedBackend> backend_;
    std::shared_ptr<CachedBlob> blob_;
    // Destroyed in reverse: the engine (its loop) first, then the fetcher (its threads, which may
    // still complete READs), then what completions report to.
    Completions completions_;
    ChunkFetcher fetcher_{FetchOptions{0, 2, 0}};  // no read amplification: a READ fetches its own chunks
    FscacheEngine engine_{fetcher_, completions_.completer()};
    rafs::UniqueFd kernel_;
    uint32_t barriers_ = 0;
};

// [begin, end) of every data extent of `fd` (SEEK_DATA/SEEK_HOLE).
std::vector<std::pair<uint64_t, uint64_t>> dataExtents(int fd) {
    std::vector<std::pair<uint64_t, uint64_t>> extents;
    off_t at = 0;
    for (;;) {
        const off_t data = ::lseek(fd, at, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) return extents;
            sysFail("lseek SEEK_DATA");
        }
        const off_t hole = ::lseek(fd, data, SEEK_HOLE);
        if (hole < 0) sysFail("lseek SEEK_HOLE");
        extents.emplace_back(data, hole);
        at = hole;
    }
}

}  // namespace

TEST_CASE("fscache engine: OPEN is answered with the object's size, an unknown cookie with -ENOENT",
          "[fscache]") {
    EngineFixture f;
    f.engine().start(false);
    Pipe boot, blob, unknown, wrong_volume;
    f.send(openMessage(1, 11, kVolume, kFsid, boot.give()));
    CHECK(f.reply() == fmt::format("copen 1,{}", f.bootstrap().bytes().size()));
    f.send(openMessage(2, 12, kVolume, f.blobId(), blob.give()));
    CHECK(f.reply() == fmt::format("copen 2,{}", f.blobSize()));
    f.send(openMessage(3, 13, kVolume, "no-such-blob", unknown.give()));
    CHECK(f.reply() == "copen 3,-2");
    f.send(openMessage(4, 14, "erofs,other", f.blobId(), wrong_volume.give()));
    CHECK(f.reply() == "copen 4,-2");
    // A refused OPEN's fd is closed at once; an answered one is kept for the object.
    CHECK(unknown.closed());
    CHECK(wrong_volume.closed());
    CHECK_FALSE(boot.closed(0));
    CHECK_FALSE(blob.closed(0));
    const FscacheCounters c = f.engine().counters();
    CHECK(c.opens == 2);
    CHECK(c.refused == 2);
}

TEST_CASE("fscache engine: a bootstrap READ writes the whole bootstrap, zero-padded, then completes", "[fscache]") {
    EngineFixture f;
    f.engine().start(false);
    const auto size = f.bootstrap().bytes().size();
    const rafs::UniqueFd file = f.standIn("boot", size);
    const int anon = dupOf(file.get());
    f.send(openMessage(1, 5, kVolume, kFsid, anon));
    REQUIRE(f.reply() == fmt::format("copen 1,{}", size));
    f.send(readMessage(2, 5, 0, kBlock));
    const auto done = f.completions().waitFor(2);
    REQUIRE(done);
    CHECK(done->fd == anon);
    CHECK(done->fd_open);
    std::vector<uint8_t> expected(f.bootstrap().bytes().begin(), f.bootstrap().bytes().end());
    expected.resize((size + kBlock - 1) / kBlock * kBlock);
    CHECK(f.contents("boot") == expected);
    // Later READs write only their own range: the rest may be culled by then, never rewritten.
    f.send(readMessage(3, 5, kBlock, kBlock));
    REQUIRE(f.completions().waitFor(3));
    CHECK(f.engine().counters().reads == 2);
    CHECK(f.engine().counters().read_errors == 0);
}

TEST_CASE("fscache engine: a blob READ is fetched, verified and written at its chunks' page-aligned offsets",
          "[fscache]") {
    EngineFixture f;
    f.engine().start(false);
    const uint64_t size = f.blobSize();
    const rafs::UniqueFd file = f.standIn("blob", size);
    const int anon = dupOf(file.get());
    f.send(openMessage(1, 3, kVolume, f.blobId(), anon));
    REQUIRE(f.reply() == fmt::format("copen 1,{}", size));

    // The kernel asks for two pages inside the third chunk: the fetcher writes that chunk whole.
    f.send(readMessage(2, 3, 2 * kChunkSize + kBlock, 2 * kBlock));
    const auto done = f.completions().waitFor(2);
    REQUIRE(done);
    CHECK(done->fd == anon);
    CHECK(done->fd_open);
    const auto extents = dataExtents(file.get());
    REQUIRE(extents.size() == 1);
    CHECK(extents[0].first % kBlock == 0);
    CHECK(extents[0].second % kBlock == 0);
    CHECK(extents[0].first <= 2 * kChunkSize + kBlock);
    CHECK(extents[0].second >= 2 * kChunkSize + 3 * kBlock);

    // The rest, with a READ past the blob's end as the kernel sends for the last folio.
    f.send(readMessage(3, 3, 0, (size + kBlock - 1) / kBlock * kBlock + 4 * kBlock));
    REQUIRE(f.completions().waitFor(3));
    const std::vector<uint8_t> cached = f.contents("blob");
    REQUIRE(cached.size() == (size + kBlock - 1) / kBlock * kBlock);
    const auto nid = f.bootstrap().lookup("data");
    REQUIRE(nid);
    const rafs::Inode inode = f.bootstrap().inode(*nid);
    REQUIRE(inode.chunks.size() == 11);
    for (const rafs::InodeChunk& c : inode.chunks) {
        INFO("chunk at file offset " << c.file_offset);
        CHECK(c.uncompressed_offset % kBlock == 0);
        REQUIRE(c.uncompressed_offset + c.length <= cached.size());
        CHECK(std::equal(f.source().begin() + static_cast<ptrdiff_t>(c.file_offset),
                         f.source().begin() + static_cast<ptrdiff_t>(c.file_offset + c.length),
                         cached.begin() + static_cast<ptrdiff_t>(c.uncompressed_offset)));
    }
    const FscacheCounters c = f.engine().counters();
    CHECK(c.blob_reads == 2);
    CHECK(c.read_errors == 0);
}

TEST_CASE("fscache engine: prefetch of a blob the kernel has not opened fetches nothing, then all once it has",
          "[fscache]") {
    EngineFixture f;
    f.engine().start(false);
    const auto& blob = f.blob();
    const auto chunks = static_cast<uint32_t>(blob->descriptor().chunks.size());
    // Registered, not opened (a mount by hand to come, or a failover): every run is dropped, so
    // the same chunks can be queued again once the first runs have ended.
    REQUIRE(f.fetcher().prefetch(blob, 0, chunks) == chunks);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (f.fetcher().prefetch(blob, 0, chunks) != chunks && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(5ms);
    }
    CHECK(blob->counters().bytes_fetched == 0);
    CHECK(blob->counters().errors == 0);
    // Opened: the same prefetch fills the cache file.
    const rafs::UniqueFd file = f.standIn("blob", f.blobSize());
    f.send(openMessage(1, 3, kVolume, f.blobId(), dupOf(file.get())));
    REQUIRE(f.reply() == fmt::format("copen 1,{}", f.blobSize()));
    while (!blob->cache().complete() && std::chrono::steady_clock::now() < deadline + 10s) {
        f.fetcher().prefetch(blob, 0, chunks);
        std::this_thread::sleep_for(5ms);
    }
    CHECK(blob->cache().complete());
    CHECK(blob->counters().errors == 0);
}

TEST_CASE("fscache engine: CLOSE releases the anonymous fd, after a pending READ's completion", "[fscache]") {
    EngineFixture f;
    f.engine().start(false);
    Pipe boot;
    f.send(openMessage(1, 21, kVolume, kFsid, boot.give()));
    REQUIRE(f.reply() == fmt::format("copen 1,{}", f.bootstrap().bytes().size()));
    f.send(closeMessage(2, 21));
    CHECK(boot.closed());

    // A blob object with a READ pending in the fetcher when its CLOSE comes: the completion still
    // gets the object's fd, open; the fd is closed after it.
    const rafs::UniqueFd file = f.standIn("blob", f.blobSize());
    const int anon = dupOf(file.get());
    f.send(openMessage(3, 22, kVolume, f.blobId(), anon));
    REQUIRE(f.reply() == fmt::format("copen 3,{}", f.blobSize()));
    f.backend().close();
    f.send(readMessage(4, 22, 0, kBlock));
    REQUIRE(f.backend().waitForReader());
    f.send(closeMessage(5, 22));
    f.barrier();
    CHECK_FALSE(f.completions().has(4));
    f.backend().open();
    const auto done = f.completions().waitFor(4);
    REQUIRE(done);
    CHECK(done->fd == anon);
    CHECK(done->fd_open);
    // The object was gone before the data came: it is not written, the reader gets EIO.
    CHECK(f.engine().counters().read_errors == 1);
    // A READ for the closed object has no fd to complete through: refused, and the loop goes on.
    f.send(readMessage(6, 22, 0, kBlock));
    f.barrier();
    CHECK_FALSE(f.completions().has(6));
    const FscacheCounters c = f.engine().counters();
    CHECK(c.closes == 2);
    CHECK(c.read_errors == 2);
}

TEST_CASE("fscache engine: malformed messages are rejected, their fds closed, and the loop keeps serving",
          "[fscache]") {
    EngineFixture f;
    f.engine().start(false);

    const uint32_t short_header[2] = {1, cachefiles::kRead};
    f.sendBytes(short_header, sizeof short_header);

    Pipe oversized_key;
    const std::string cookie(cachefiles::kMaxKeySize + 1, 'c');
    f.send(openMessage(2, 2, kVolume, cookie, oversized_key.give()));
    CHECK(oversized_key.closed());

    Pipe too_long;
    f.send(openMessage(3, 3, kVolume, std::string(cachefiles::kMsgMaxSize, 'c'), too_long.give()));
    CHECK(too_long.closed());

    f.send(Message(4, 7, 4).done());  // opcode 7 does not exist
    f.send(Message(5, cachefiles::kRead, 5).append("short").done());
    auto lying = readMessage(6, 5, 0, kBlock);
    lying[offsetof(cachefiles::Msg, len)] = std::byte{40};
    f.send(lying);
    f.send(Message(7, cachefiles::kClose, 5).append("x").done());

    // Still serving.
    Pipe boot;
    f.send(openMessage(8, 8, kVolume, kFsid, boot.give()));
    CHECK(f.reply() == fmt::format("copen 8,{}", f.bootstrap().bytes().size()));
    const FscacheCounters c = f.engine().counters();
    CHECK(c.opens == 1);
    CHECK(c.reads == 0);
    CHECK(c.closes == 0);
}

TEST_CASE("fscache engine: on an adopted device, start(true) writes restore before serving", "[fscache]") {
    EngineFixture f;
    f.engine().start(true);
    CHECK(f.reply() == "restore");
    Pipe boot;
    f.send(openMessage(1, 1, kVolume, kFsid, boot.give()));
    CHECK(f.reply() == fmt::format("copen 1,{}", f.bootstrap().bytes().size()));
}

namespace {

// A core that completes a READ and then throws (a failed allocation after its answer).
class ThrowingAfterAnswer final : public DataPlane {
public:
    void makePresent(uint32_t, uint32_t, uint64_t, uint64_t, Completion done) override {
        done(0);
        throw rafs::Error("out of memory after the answer");
    }
    void fill(uint32_t, uint32_t, Completion done) override { done(0); }
    uint32_t forgetLost(uint32_t, uint32_t, uint64_t, uint64_t) override { return 0; }
};

// A core that fails a READ's check for lost data (a chunk map it cannot write) or, past it, the
// request to make the range present (say, out of memory planning it).
class FailingCore final : public DataPlane {
public:
    explicit FailingCore(bool at_check) : at_check_(at_check) {}
    void makePresent(uint32_t, uint32_t, uint64_t, uint64_t, Completion) override {
        throw rafs::Error("cannot plan the fetch");
    }
    void fill(uint32_t, uint32_t, Completion done) override { done(0); }
    uint32_t forgetLost(uint32_t, uint32_t, uint64_t, uint64_t) override {
        if (at_check_) throw rafs::Error("chunk map: write: Input/output error");
        return 0;
    }

private:
    bool at_check_;
};

}  // namespace

namespace {

// One blob READ through `core`, on a device the test plays the kernel of: an OPEN, then the READ
// (msg 2), until the engine has stopped. Its counters.
FscacheCounters serveOneRead(DataPlane& core, Completions& completions) {
    FscacheEngine engine(core, completions.completer());
    const std::vector<uint8_t> bootstrap(kBlock);
    FscacheMount mount;
    mount.image = 0;
    mount.fsid = kFsid;
    mount.bootstrap = bootstrap;
    mount.mountpoint = "/nonexistent/not-mounted";
    mount.blobs.push_back({0, "blob", 16 * kBlock, std::make_shared<ObjectFd>()});
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0);
    const rafs::UniqueFd kernel(fds[0]);
    REQUIRE(::fcntl(fds[1], F_SETFL, O_NONBLOCK) == 0);
    engine.adopt(FscacheDevice::adopt(fds[1]));
    engine.reattach(mount);
    engine.start(false);
    Pipe anon;
    for (const auto& message : {openMessage(1, 5, kVolume, "blob", anon.give()), readMessage(2, 5, 0, kBlock)}) {
        REQUIRE(::send(kernel.get(), message.data(), message.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(message.size()));
    }
    CHECK(completions.waitFor(2));
    engine.stop();  // the loop thread is done with the READ, also after an exception
    return engine.counters();
}

}  // namespace

TEST_CASE("fscache engine: a READ whose check for lost data or whose fetch fails at once is completed (EIO), "
          "not left waiting",
          "[fscache]") {
    FailingCore core(GENERATE(true, false));
    Completions completions;
    CHECK(serveOneRead(core, completions).read_errors == 1);
    CHECK(completions.times(2) == 1);
}

// Completed twice, a READ's id could already name a newer READ of the same object, which the
// second completion would end before its data is there.
TEST_CASE("fscache engine: a READ the core completes before it throws is completed once", "[fscache]") {
    ThrowingAfterAnswer core;
    Completions completions;
    CHECK(serveOneRead(core, completions).read_errors == 0);
    CHECK(completions.times(2) == 1);
}
