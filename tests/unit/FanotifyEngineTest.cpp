// The fanotify engine against the real kernel: an EROFS image made by erofs-utils' mkfs.erofs (a
// bootstrap plus one uncompressed blob device, so the blob is exactly what a cache file holds),
// a sparse cache file on ext4 under /var/tmp, and fake cores that copy ranges from the blob.
// Needs root (fanotify pre-content groups and mounts); skipped otherwise.
#include "daemon/engines/fanotify/FanotifyEngine.h"

#include "daemon/engines/fanotify/FanotifyGroup.h"
#include "daemon/engines/fanotify/PendingJournal.h"
#include "format/Error.h"
#include "kernel-abi/fanotify.h"

#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <poll.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

constexpr uint64_t kBlock = 4096;

bool isRoot() { return ::geteuid() == 0; }

// An fd the test opened; open failures throw.
rafs::UniqueFd opened(int fd) {
    if (fd < 0) throw std::runtime_error(std::string("open: ") + std::strerror(errno));
    return rafs::UniqueFd(fd);
}

using rafs::test::TempDir;

bool isMounted(const fs::path& mountpoint) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        // Field 5 is the mount point.
        size_t pos = 0;
        for (int field = 0; field < 4; ++field) pos = line.find(' ', pos) + 1;
        if (line.substr(pos, line.find(' ', pos) - pos) == mountpoint.native()) return true;
    }
    return false;
}

// Detaches whatever is still mounted on the mount point when the test ends, even on failure, so
// the temporary directory can be removed.
class MountGuard {
public:
    explicit MountGuard(fs::path mountpoint) : mountpoint_(std::move(mountpoint)) {
        fs::create_directories(mountpoint_);
    }
    MountGuard(const MountGuard&) = delete;
    MountGuard& operator=(const MountGuard&) = delete;
    ~MountGuard() {
        while (::umount2(mountpoint_.c_str(), MNT_DETACH) == 0) {
        }
    }
    const fs::path& path() const { return mountpoint_; }

private:
    fs::path mountpoint_;
};

// Inode marks of every fanotify group of this process, as /proc lists them.
size_t countFanotifyMarks() {
    size_t marks = 0;
    for (const auto& entry : fs::directory_iterator("/proc/self/fdinfo")) {
        std::ifstream in(entry.path());
        std::string line;
        while (std::getline(in, line)) {
            if (line.starts_with("fanotify ino:")) ++marks;
        }
    }
    return marks;
}

std::string randomBytes(size_t size, uint64_t seed) {
    std::mt19937_64 random(seed);
    std::string data(size, '\0');
    for (char& c : data) c = static_cast<char>(random() & 0xff);
    return data;
}

void writeFile(const fs::path& path, const std::string& data) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out) throw std::runtime_error("cannot write " + path.native());
}

std::string readFile(const fs::path& path) {
    std::string data(fs::file_size(path), '\0');
    std::ifstream in(path, std::ios::binary);
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    if (!in) throw std::runtime_error("cannot read " + path.native());
    return data;
}

// A file of the mount read with read(2) in `chunk`-byte steps: the bytes read and the errno that
// stopped it (0 at the end of the file).
struct ReadResult {
    std::string data;
    int error = 0;
};

ReadResult readAll(const fs::path& path, size_t chunk = 128 * 1024) {
    ReadResult result;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {{}, errno};
    std::string buffer(chunk, '\0');
    for (;;) {
        const ssize_t n = ::read(fd, buffer.data(), buffer.size());
        if (n < 0) {
            result.error = errno;
            break;
        }
        if (n == 0) break;
        result.data.append(buffer, 0, static_cast<size_t>(n));
    }
    ::close(fd);
    return result;
}

// Drops the mount's cached pages of a file, so the next read goes to the cache file again.
void evict(const fs::path& path) {
    const rafs::UniqueFd fd = opened(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED) == 0);
}

// An image built by mkfs.erofs: bootstrap, one blob device, and the source files' contents.
class Image {
public:
    Image() : dir_("/var/tmp") {
        files_["big1"] = randomBytes((3 << 20) + 17, 1);
        files_["big2"] = randomBytes((1 << 20) + 3 * kBlock, 2);
        files_["dir/mid"] = randomBytes(300000, 3);
        files_["bad"] = randomBytes(200 * 1024 + 5, 4);
        files_["empty"] = "";
        files_["tiny"] = "abc";
        std::mt19937_64 sizes(5);
        for (int i = 0; i < 12; ++i) {
            files_["dir/sub/small" + std::to_string(i)] = randomBytes(1 + sizes() % 40000, 100 + static_cast<uint64_t>(i));
        }
        for (const auto& [name, data] : files_) writeFile(tree() / name, data);
        const std::string command = "mkfs.erofs --chunksize=4096 --blobdev=" + blob().native() + " " +
                                    bootstrap().native() + " " + tree().native() + " >" +
                                    (dir_.path() / "mkfs.log").native() + " 2>&1";
        if (std::system(command.c_str()) != 0) throw std::runtime_error("mkfs.erofs failed: " + command);
        blobData_ = readFile(blob());
    }

    fs::path dir() const { return dir_.path(); }
    fs::path tree() const { return dir_.path() / "tree"; }
    fs::path bootstrap() const { return dir_.path() / "boot.img"; }
    fs::path blob() const { return dir_.path() / "blob.img"; }
    const std::map<std::string, std::string>& files() const { return files_; }
    const std::string& blobData() const { return blobData_; }
    uint64_t blobSize() const { return blobData_.size(); }

    // Where a file's data starts in the blob: files are whole, 4 KiB-aligned chunk runs in the
    // uncompressed blob, so its first block is found at a block boundary.
    uint64_t blobOffsetOf(const std::string& name) const {
        const std::string first = files_.at(name).substr(0, kBlock);
        for (uint64_t off = 0; off + first.size() <= blobData_.size(); off += kBlock) {
            if (blobData_.compare(off, first.size(), first) == 0) return off;
        }
        throw std::runtime_error("file data not found in the blob: " + name);
    }

private:
    TempDir dir_;
    std::map<std::string, std::string> files_;
    std::string blobData_;
};

// A sparse cache file of the blob's size, opened before the engine marks it (as the core does).
class CacheFile {
public:
    CacheFile(const fs::path& path, uint64_t size)
        : path_(path), fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)), size_(size) {
        if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) throw std::runtime_error("ftruncate failed");
    }
    CacheFile(const CacheFile&) = delete;
    CacheFile& operator=(const CacheFile&) = delete;
    ~CacheFile() { ::unlink(path_.c_str()); }

    rafsd::FanotifyBlobFile blobFile(bool complete = false) const { return {0, path_, fd_.get(), size_, complete}; }
    int fd() const { return fd_.get(); }

private:
    fs::path path_;
    rafs::UniqueFd fd_;
    uint64_t size_;
};

// Copies [offset, offset + length) of the blob into the cache file through the core's fd.
int copyRange(const std::string& blob, int cache, uint64_t offset, uint64_t length) {
    const uint64_t end = std::min<uint64_t>(offset + length, blob.size());
    if (offset >= end) return 0;
    const auto size = static_cast<size_t>(end - offset);
    const ssize_t n = ::pwrite(cache, blob.data() + offset, size, static_cast<off_t>(offset));
    return n == static_cast<ssize_t>(size) ? 0 : EIO;
}

// Copies every range on a worker thread (or inline), failing the ranges that touch `failing`.
class CopyingCore final : public rafsd::DataPlane {
public:
    CopyingCore(const Image& image, int cache, bool inlineDone)
        : blob_(image.blobData()), cache_(cache), inline_(inlineDone) {
        if (!inline_) {
            for (int i = 0; i < 2; ++i) workers_.emplace_back([this] { work(); });
        }
    }
    ~CopyingCore() override {
        {
            std::lock_guard lock(mutex_);
            quit_ = true;
        }
        wake_.notify_all();
        for (std::thread& worker : workers_) worker.join();
    }

    void failRange(uint64_t begin, uint64_t end) {
        failBegin_ = begin;
        failEnd_ = end;
    }

    uint32_t forgetLost(uint32_t, uint32_t, uint64_t, uint64_t) override { return 0; }
    void fill(uint32_t image, uint32_t blob, rafsd::Completion done) override {
        makePresent(image, blob, 0, blob_.size(), std::move(done));
    }
    void makePresent(uint32_t, uint32_t, uint64_t offset, uint64_t length, rafsd::Completion done) override {
        std::unique_lock lock(mutex_);
        calls_.emplace_back(offset, length);
        if (inline_) {
            lock.unlock();
            done(fill(offset, length));
            return;
        }
        queue_.push_back({offset, length, std::move(done)});
        wake_.notify_one();
    }

    std::vector<std::pair<uint64_t, uint64_t>> calls() const {
        std::lock_guard lock(mutex_);
        return calls_;
    }

private:
    struct Job {
        uint64_t offset;
        uint64_t length;
        rafsd::Completion done;
    };

    int fill(uint64_t offset, uint64_t length) const {
        if (offset < failEnd_ && failBegin_ < offset + length) return EIO;
        return copyRange(blob_, cache_, offset, length);
    }

    void work() {
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [this] { return quit_ || !queue_.empty(); });
            if (queue_.empty()) return;
            Job job = std::move(queue_.front());
            queue_.erase(queue_.begin());
            lock.unlock();
            job.done(fill(job.offset, job.length));
            lock.lock();
        }
    }

    const std::string& blob_;
    int cache_;
    bool inline_;
    std::atomic<uint64_t> failBegin_{0};
    std::atomic<uint64_t> failEnd_{0};
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    bool quit_ = false;
    std::vector<Job> queue_;
    std::vector<std::pair<uint64_t, uint64_t>> calls_;
    std::vector<std::thread> workers_;
};

// Holds every range until release() (or 20 s), then copies it and completes: a fetch that hangs.
class SlowCore final : public rafsd::DataPlane {
public:
    SlowCore(const Image& image, int cache) : blob_(image.blobData()), cache_(cache) {}
    ~SlowCore() override {
        release();
        for (std::thread& t : threads_) t.join();
    }

    uint32_t forgetLost(uint32_t, uint32_t, uint64_t, uint64_t) override { return 0; }
    void fill(uint32_t image, uint32_t blob, rafsd::Completion done) override {
        makePresent(image, blob, 0, blob_.size(), std::move(done));
    }
    void makePresent(uint32_t, uint32_t, uint64_t offset, uint64_t length, rafsd::Completion done) override {
        std::lock_guard lock(mutex_);
        ++calls_;
        threads_.emplace_back([this, offset, length, done = std::move(done)] {
            {
                std::unique_lock wait(mutex_);
                released_.wait_for(wait, 20s, [this] { return release_; });
            }
            done(copyRange(blob_, cache_, offset, length));
        });
    }

    void release() {
        {
            std::lock_guard lock(mutex_);
            release_ = true;
        }
        released_.notify_all();
    }

    size_t calls() const {
        std::lock_guard lock(mutex_);
        return calls_;
    }

private:
    const std::string& blob_;
    int cache_;
    mutable std::mutex mutex_;
    std::condition_variable released_;
    bool release_ = false;
    size_t calls_ = 0;
    std::vector<std::thread> threads_;
};

rafsd::FanotifyMount mountOf(uint32_t image, const Image& img, const fs::path& mountpoint,
                             std::vector<rafsd::FanotifyBlobFile> blobs) {
    return {image, img.bootstrap(), mountpoint, std::move(blobs)};
}

void checkAllFiles(const Image& img, const fs::path& mountpoint) {
    for (const auto& [name, data] : img.files()) {
        const ReadResult got = readAll(mountpoint / name);
        INFO(name);
        CHECK(got.error == 0);
        CHECK(got.data == data);
    }
}

void printCounters(const char* test, const rafsd::FanotifyCounters& c) {
    std::fprintf(stderr, "[fanotify] %s: events %llu, allowed %llu, denied %llu, overflows %llu\n", test,
                 static_cast<unsigned long long>(c.events), static_cast<unsigned long long>(c.allowed),
                 static_cast<unsigned long long>(c.denied), static_cast<unsigned long long>(c.overflows));
}

// An image, its cache file and a started engine with nothing mounted yet: the common start of
// the tests that serve one mount. The engine starts only as root; the tests skip otherwise.
struct ServedImage {
    ServedImage() {
        if (isRoot()) engine.start();
    }
    const Image img;
    const MountGuard mnt{img.dir() / "mnt"};
    const CacheFile cache{img.dir() / "cache", img.blobSize()};
    CopyingCore core{img, cache.fd(), false};
    rafsd::FanotifyEngine engine{core};
};

}  // namespace

TEST_CASE("fanotify: checkKernel accepts this kernel", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    REQUIRE_NOTHROW(rafsd::FanotifyEngine::checkKernel());
}

TEST_CASE("fanotify: checkKernel names a missing CAP_SYS_ADMIN", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    std::string message;
    std::thread([&] {
        // Capabilities are per thread: this one drops CAP_SYS_ADMIN, the others keep it.
        __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
        if (::syscall(SYS_capget, &header, data) != 0) return;
        data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective &= ~CAP_TO_MASK(CAP_SYS_ADMIN);
        if (::syscall(SYS_capset, &header, data) != 0) return;
        try {
            rafsd::FanotifyEngine::checkKernel();
            message = "no error";
        } catch (const rafs::Error& e) {
            message = e.what();
        }
    }).join();
    CHECK_THAT(message, Contains("CAP_SYS_ADMIN"));
}

TEST_CASE_METHOD(ServedImage, "fanotify: concurrent readers see the image's exact bytes", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    engine.mount(mountOf(1, img, mnt.path(), {cache.blobFile()}));
    REQUIRE(isMounted(mnt.path()));
    CHECK(countFanotifyMarks() == 1);

    // Eight threads read every file in different orders, chunk sizes and start offsets, so their
    // ranges overlap and race.
    std::vector<std::string> names;
    for (const auto& entry : img.files()) names.push_back(entry.first);
    std::mutex failuresMutex;
    std::vector<std::string> failures;
    std::vector<std::thread> readers;
    for (size_t t = 0; t < 8; ++t) {
        readers.emplace_back([&, t] {
            const size_t chunk = 1000 + t * 3001;
            for (size_t i = 0; i < names.size(); ++i) {
                const std::string& name = names[(i + t) % names.size()];
                const std::string& want = img.files().at(name);
                const int fd = ::open((mnt.path() / name).c_str(), O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                    std::lock_guard lock(failuresMutex);
                    failures.push_back(name + ": open failed");
                    continue;
                }
                const size_t start = want.empty() ? 0 : (t * 7777) % want.size();
                std::string buffer(chunk, '\0');
                for (size_t done = 0; done < want.size(); done += chunk) {
                    const size_t off = (start + done) % want.size();
                    const size_t len = std::min(chunk, want.size() - off);
                    const ssize_t n = ::pread(fd, buffer.data(), len, static_cast<off_t>(off));
                    if (n != static_cast<ssize_t>(len) || buffer.compare(0, len, want, off, len) != 0) {
                        std::lock_guard lock(failuresMutex);
                        failures.push_back(name + " at " + std::to_string(off) + ": " +
                                           (n < 0 ? std::strerror(errno) : "wrong bytes"));
                    }
                }
                ::close(fd);
            }
        });
    }
    for (std::thread& reader : readers) reader.join();
    CHECK(failures.empty());
    for (size_t i = 0; i < std::min<size_t>(failures.size(), 5); ++i) UNSCOPED_INFO(failures[i]);
    checkAllFiles(img, mnt.path());

    const rafsd::FanotifyCounters counters = engine.counters();
    printCounters("8 concurrent readers", counters);
    CHECK(counters.events > 0);
    CHECK(counters.allowed == counters.events);
    CHECK(counters.denied == 0);
    CHECK(counters.overflows == 0);

    // Every range handed to the core is block-aligned and inside the blob.
    const auto calls = core.calls();
    CHECK(calls.size() == counters.events);
    uint64_t smallest = UINT64_MAX;
    uint64_t largest = 0;
    for (const auto& [offset, length] : calls) {
        CHECK(offset % kBlock == 0);
        CHECK(length > 0);
        CHECK(offset + length <= img.blobSize());
        CHECK(((offset + length) % kBlock == 0 || offset + length == img.blobSize()));
        smallest = std::min(smallest, length);
        largest = std::max(largest, length);
    }
    std::fprintf(stderr, "[fanotify] blob %llu bytes, %zu ranges, %llu..%llu bytes each\n",
                 static_cast<unsigned long long>(img.blobSize()), calls.size(),
                 static_cast<unsigned long long>(smallest), static_cast<unsigned long long>(largest));

    engine.umount(mnt.path());
    CHECK_FALSE(isMounted(mnt.path()));
    CHECK(countFanotifyMarks() == 0);
    engine.stop();
}

TEST_CASE("fanotify: a range the core cannot fetch fails the read with EIO, not zeros", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    const Image img;
    const MountGuard mnt(img.dir() / "mnt");
    const CacheFile cache(img.dir() / "cache", img.blobSize());
    CopyingCore core(img, cache.fd(), true);  // completes inline, on the event loop thread
    const uint64_t bad = img.blobOffsetOf("bad");
    core.failRange(bad, bad + img.files().at("bad").size());
    rafsd::FanotifyEngine engine(core);
    engine.start();
    engine.mount(mountOf(1, img, mnt.path(), {cache.blobFile()}));

    for (int attempt = 0; attempt < 2; ++attempt) {
        const ReadResult got = readAll(mnt.path() / "bad");
        CHECK(got.error == EIO);
        CHECK(got.data.empty());
    }
    // The other files are unaffected.
    for (const auto& [name, data] : img.files()) {
        if (name == "bad") continue;
        const ReadResult got = readAll(mnt.path() / name);
        INFO(name);
        CHECK(got.error == 0);
        CHECK(got.data == data);
    }
    const rafsd::FanotifyCounters counters = engine.counters();
    printCounters("failing range", counters);
    CHECK(counters.denied >= 2);
    CHECK(counters.allowed + counters.denied == counters.events);
    engine.stop();
    CHECK_FALSE(isMounted(mnt.path()));
}

TEST_CASE("fanotify: stop() while a reader waits on a hanging fetch", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    const Image img;
    const MountGuard mnt(img.dir() / "mnt");
    const CacheFile cache(img.dir() / "cache", img.blobSize());
    SlowCore core(img, cache.fd());
    {
        rafsd::FanotifyEngine engine(core);
        engine.start();
        engine.mount(mountOf(1, img, mnt.path(), {cache.blobFile()}));

        ReadResult got;
        std::thread reader([&] { got = readAll(mnt.path() / "big1"); });
        for (int i = 0; i < 500 && core.calls() == 0; ++i) std::this_thread::sleep_for(10ms);
        CHECK(core.calls() > 0);

        // The mount is busy (the reader's file is open): stop() fills it, which hangs too, for at
        // most the fill time.
        const auto before = std::chrono::steady_clock::now();
        engine.stop(rafsd::FanotifyEngine::BusyAtStop::Detach, 500ms, 1s);
        const auto took = std::chrono::steady_clock::now() - before;
        reader.join();

        std::fprintf(stderr, "[fanotify] stop() took %lld ms; reader got %zu bytes, error %d\n",
                     static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
                     got.data.size(), got.error);
        printCounters("stop with a hanging fetch", engine.counters());
        CHECK(took < 3s);
        // Data or EIO, never zeros: whatever was read is the file's prefix.
        const std::string& want = img.files().at("big1");
        CHECK((got.error == EIO || got.error == 0));
        CHECK(want.compare(0, got.data.size(), got.data) == 0);
        if (got.error == 0) CHECK(got.data == want);
        CHECK(engine.counters().denied > 0);
        CHECK_FALSE(isMounted(mnt.path()));
        CHECK(countFanotifyMarks() == 0);
    }
    // Completions arriving after the engine is gone are ignored.
    core.release();
}

TEST_CASE("fanotify: mount failures are clear and leave no marks", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    const Image img;
    const MountGuard mnt(img.dir() / "mnt");
    CopyingCore unusedCore(img, -1, true);
    rafsd::FanotifyEngine engine(unusedCore);
    CHECK_THROWS_WITH(engine.mount(mountOf(1, img, mnt.path(), {})), Contains("not running"));
    engine.start();
    CHECK_THROWS_WITH(engine.start(), Contains("already started"));

    SECTION("a cache file on tmpfs cannot be marked") {
        const fs::path shm = fs::path("/dev/shm") / ("rafsd-fanotify-" + std::to_string(::getpid()));
        const CacheFile cache(shm, img.blobSize());
        CHECK_THROWS_WITH(engine.mount(mountOf(1, img, mnt.path(), {cache.blobFile()})),
                          Contains("pre-content") && Contains(shm.native()));
    }
    SECTION("the kernel refuses the bootstrap") {
        const CacheFile cache(img.dir() / "cache", img.blobSize());
        const CacheFile zeros(img.dir() / "zeros", 2 * kBlock);
        rafsd::FanotifyMount m = mountOf(1, img, mnt.path(), {cache.blobFile()});
        m.bootstrap = img.dir() / "zeros";  // no EROFS superblock
        CHECK_THROWS_WITH(engine.mount(m), Contains("cannot mount") && Contains("zeros"));
    }
    CHECK_FALSE(isMounted(mnt.path()));
    CHECK(countFanotifyMarks() == 0);

    // The engine is still usable.
    const CacheFile cache(img.dir() / "good-cache", img.blobSize());
    REQUIRE(copyRange(img.blobData(), cache.fd(), 0, img.blobSize()) == 0);  // complete
    engine.mount(mountOf(1, img, mnt.path(), {cache.blobFile(true)}));
    CHECK(countFanotifyMarks() == 0);  // complete blobs are not marked
    checkAllFiles(img, mnt.path());
    CHECK(engine.counters().events == 0);
    engine.stop();
}

// A blob's completion callback outlives the mount that set it when another image shares the blob,
// and an unmounted image's index is reused by the next mount: a late "this blob is complete" must
// unmark that blob's file, never the file the index's new image has in that place, whose holes
// would then read as zeros.
TEST_CASE_METHOD(ServedImage, "fanotify: unmarkComplete names the complete file, not a reused image index",
                 "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    engine.mount(mountOf(7, img, mnt.path(), {cache.blobFile()}));
    engine.umount(mnt.path());
    const CacheFile other(img.dir() / "other-cache", img.blobSize());
    engine.mount(mountOf(7, img, mnt.path(), {other.blobFile()}));  // index 7 again, another file
    REQUIRE(countFanotifyMarks() == 1);
    engine.unmarkComplete(cache.fd());  // the first mount's file, complete: no mount uses it now
    CHECK(countFanotifyMarks() == 1);   // the other file keeps its mark
    engine.umount(mnt.path());
    CHECK(countFanotifyMarks() == 0);
    engine.stop();
}

TEST_CASE_METHOD(ServedImage, "fanotify: unmarkComplete makes reads of a complete blob event-free", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    engine.mount(mountOf(7, img, mnt.path(), {cache.blobFile()}));

    checkAllFiles(img, mnt.path());
    const uint64_t first = engine.counters().events;
    CHECK(first > 0);
    // Control: evicted pages are read from the cache file again, which raises events.
    for (const auto& entry : img.files()) evict(mnt.path() / entry.first);
    checkAllFiles(img, mnt.path());
    const uint64_t second = engine.counters().events;
    CHECK(second > first);

    REQUIRE(copyRange(img.blobData(), cache.fd(), 0, img.blobSize()) == 0);
    engine.unmarkComplete(cache.fd());
    CHECK(countFanotifyMarks() == 0);
    engine.unmarkComplete(cache.fd());  // already unmarked: nothing to do
    for (const auto& entry : img.files()) evict(mnt.path() / entry.first);
    checkAllFiles(img, mnt.path());
    std::fprintf(stderr, "[fanotify] events: first read %llu, after eviction %llu, after unmark %llu\n",
                 static_cast<unsigned long long>(first), static_cast<unsigned long long>(second),
                 static_cast<unsigned long long>(engine.counters().events));
    CHECK(engine.counters().events == second);

    engine.umount(mnt.path());
    CHECK_FALSE(isMounted(mnt.path()));
    engine.stop();
}

TEST_CASE("fanotify: a cache file shared by two mounts stays marked until both are gone", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    const Image img;
    const MountGuard mnt1(img.dir() / "mnt1");
    const MountGuard mnt2(img.dir() / "mnt2");
    const CacheFile cache(img.dir() / "cache", img.blobSize());
    CopyingCore core(img, cache.fd(), false);
    rafsd::FanotifyEngine engine(core);
    engine.start();
    engine.mount(mountOf(1, img, mnt1.path(), {cache.blobFile()}));
    engine.mount(mountOf(2, img, mnt2.path(), {cache.blobFile()}));
    CHECK(countFanotifyMarks() == 1);
    CHECK_THROWS_WITH(engine.mount(mountOf(3, img, mnt2.path(), {cache.blobFile()})), Contains("already mounted"));
    CHECK_THROWS_WITH(engine.umount(img.dir()), Contains("not mounted"));
    checkAllFiles(img, mnt1.path());

    engine.umount(mnt1.path());
    CHECK(countFanotifyMarks() == 1);
    const uint64_t before = engine.counters().events;
    checkAllFiles(img, mnt2.path());
    CHECK(engine.counters().events > before);  // mnt2 has its own page cache: events again

    engine.umount(mnt2.path());
    CHECK(countFanotifyMarks() == 0);
    engine.stop();
}

TEST_CASE_METHOD(ServedImage, "fanotify: a busy mount refuses umount() and is detached by stop()", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    engine.mount(mountOf(1, img, mnt.path(), {cache.blobFile()}));
    const rafs::UniqueFd held = opened(::open((mnt.path() / "big2").c_str(), O_RDONLY | O_CLOEXEC));

    CHECK_THROWS_WITH(engine.umount(mnt.path()), Contains("cannot unmount") && Contains("busy"));
    CHECK(isMounted(mnt.path()));
    CHECK(countFanotifyMarks() == 1);

    const auto before = std::chrono::steady_clock::now();
    engine.stop(rafsd::FanotifyEngine::BusyAtStop::Detach, 200ms);
    CHECK(std::chrono::steady_clock::now() - before < 2s);
    CHECK_FALSE(isMounted(mnt.path()));
    CHECK(countFanotifyMarks() == 0);
}

TEST_CASE_METHOD(ServedImage, "fanotify: stop() serves a detached busy mount, its files filled, until they close", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    engine.mount(mountOf(1, img, mnt.path(), {cache.blobFile()}));
    // Opened, nothing read: every range of it is still a hole in the cache file.
    int held = ::open((mnt.path() / "big2").c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(held >= 0);

    const auto before = std::chrono::steady_clock::now();
    std::thread stopper([&] { engine.stop(rafsd::FanotifyEngine::BusyAtStop::Detach, 10s); });
    for (int i = 0; i < 500 && isMounted(mnt.path()); ++i) std::this_thread::sleep_for(10ms);
    CHECK_FALSE(isMounted(mnt.path()));  // detached at once: nothing new is opened there
    std::this_thread::sleep_for(300ms);
    // Served (or, once stop() ended, complete): the file's bytes, not the hole's zeros.
    std::string buffer(4096, 'x');
    const ssize_t n = ::pread(held, buffer.data(), buffer.size(), 1 << 20);
    CHECK(n == 4096);
    CHECK(buffer == img.files().at("big2").substr(1 << 20, 4096));
    ::close(held);
    stopper.join();
    const auto took = std::chrono::steady_clock::now() - before;
    CHECK(took < 5s);  // stop() ended with the fill or the close, not at the 10 s grace
    CHECK(countFanotifyMarks() == 0);
}

// A worker killed between reading a batch and recording its events leaves orphans whose file is not
// known. While a mount the dead worker served is left unserved (its takeover failed), such an orphan
// may be a read of that mount's hole: it is denied, not allowed because the files served have the
// range.
TEST_CASE("fanotify: an orphan of an unknown file is denied while a mount is left unserved", "[fanotify]") {
    if (!isRoot()) {
        WARN("not root: fanotify tests skipped");
        return;
    }
    const Image img;
    const MountGuard served_mnt(img.dir() / "served");
    const CacheFile served(img.dir() / "served-cache", img.blobSize());
    REQUIRE(copyRange(img.blobData(), served.fd(), 0, img.blobSize()) == 0);  // complete
    const CacheFile unserved(img.dir() / "unserved-cache", img.blobSize());  // holes only
    CopyingCore core(img, served.fd(), true);

    rafs::UniqueFd group = rafsd::FanotifyEngine::createGroup();
    rafsd::markPreAccess(group.get(), unserved.fd(), img.dir() / "unserved-cache");
    ReadResult got;
    std::thread reader([&] { got = readAll(img.dir() / "unserved-cache"); });
    // The dead worker read the reader's event into its batch and was killed before recording it.
    rafsd::PendingJournal dead = rafsd::PendingJournal::create();
    const std::span<std::byte> batch = dead.beginBatch();
    pollfd p{group.get(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    const ssize_t n = ::read(group.get(), batch.data(), batch.size());
    REQUIRE(n >= static_cast<ssize_t>(sizeof(fanotify::EventMetadata)));
    fanotify::EventMetadata event{};
    std::memcpy(&event, batch.data(), sizeof event);
    const rafs::UniqueFd event_fd(event.fd);  // opened in this process for the dead worker

    rafsd::FanotifyEngine engine(core);
    engine.adopt(std::move(group), rafsd::PendingJournal::adopt(rafs::UniqueFd::duplicate(dead.fd(), "journal")));
    engine.reattach(mountOf(1, img, served_mnt.path(), {served.blobFile()}));
    engine.leaveUnserved(img.dir() / "unserved");
    engine.start();
    reader.join();
    CHECK(got.error == EIO);
    CHECK(got.data.empty());  // allowed, it would have read the hole's zeros
    CHECK(core.calls().empty());
    engine.stop();
}

TEST_CASE("fanotify: an event without a range record may read the whole file", "[fanotify]") {
    std::vector<std::byte> batch;
    auto append = [&](const auto& record) {
        const auto* p = reinterpret_cast<const std::byte*>(&record);
        batch.insert(batch.end(), p, p + sizeof record);
    };
    fanotify::EventMetadata ranged{};
    ranged.event_len = sizeof(fanotify::EventMetadata) + sizeof(fanotify::EventInfoRange);
    ranged.vers = fanotify::kMetadataVersion;
    ranged.metadata_len = sizeof(fanotify::EventMetadata);
    ranged.fd = 7;
    append(ranged);
    fanotify::EventInfoRange range{};
    range.hdr = {fanotify::kInfoTypeRange, 0, sizeof range};
    range.offset = 8192;
    range.count = 100;
    append(range);
    fanotify::EventMetadata bare = ranged;
    bare.event_len = sizeof(fanotify::EventMetadata);
    bare.fd = 8;
    append(bare);
    std::vector<rafsd::FanotifyEvent> events;
    rafsd::forEachEvent(batch, [&](const rafsd::FanotifyEvent& e) { events.push_back(e); }, false);
    REQUIRE(events.size() == 2);
    CHECK((events[0].fd == 7 && events[0].offset == 8192 && events[0].count == 100));
    CHECK((events[1].fd == 8 && events[1].offset == 0 && events[1].count == rafsd::FanotifyEvent::kWholeFile));
}
