#include "daemon/engines/fscache/FscacheEngine.h"

#include "builder/format/Error.h"
#include "daemon/core/Log.h"
#include "daemon/core/UniqueFd.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <limits>
#include <cstdlib>
#include <cstring>

namespace rafsd {

namespace {

using rafs::fail;
using rafs::failErrno;

constexpr uint64_t kDeviceTag = 1;
constexpr uint64_t kWakeTag = 2;
constexpr uint64_t kBlock = CacheFile::kBlockSize;

uint64_t roundUp(uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

std::string volumeKey(const FscacheMount& m) { return "erofs," + (m.domain_id.empty() ? m.fsid : m.domain_id); }

// pwrite through an anonymous fd: before 6.13 it returned the page-rounded length, so more than
// asked for is success too.
void writeAll(int fd, const uint8_t* data, uint64_t length, uint64_t offset, std::string_view what) {
    while (length > 0) {
        const ssize_t n = ::pwrite(fd, data, length, static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            failErrno(fmt::format("{}: write of {} bytes at {}", what, length, offset));
        }
        if (n == 0) fail("{}: write of {} bytes at {} wrote nothing", what, length, offset);
        const auto done = std::min(static_cast<uint64_t>(n), length);
        data += done;
        offset += done;
        length -= done;
    }
}

}  // namespace

void cachefilesReadComplete(int anon_fd, uint32_t msg_id) {
    if (::ioctl(anon_fd, cachefiles::kIocReadComplete, static_cast<unsigned long>(msg_id)) != 0) {
        log::warn("cachefiles READ {}: READ_COMPLETE: {}", msg_id, std::strerror(errno));
    }
}

AnonFd::~AnonFd() {
    closeOrWarn(fd_, "cachefiles anonymous fd");
}

bool FscacheCacheFile::hasData(uint64_t offset, uint64_t length) const {
    std::shared_lock lock(mutex_);
    if (!fd_ || length == 0) return true;
    const off_t data = ::lseek(fd_->get(), static_cast<off_t>(offset), SEEK_DATA);
    if (data < 0) return errno != ENXIO;  // ENXIO: no data from offset on; else cannot tell
    if (static_cast<uint64_t>(data) > offset) return false;
    const off_t hole = ::lseek(fd_->get(), static_cast<off_t>(offset), SEEK_HOLE);
    if (hole < 0) return true;
    return static_cast<uint64_t>(hole) >= offset + length;
}

void FscacheCacheFile::attach(std::shared_ptr<AnonFd> fd) {
    std::unique_lock lock(mutex_);
    fd_ = std::move(fd);
}

void FscacheCacheFile::detach(const AnonFd& fd) {
    std::unique_lock lock(mutex_);
    if (fd_.get() == &fd) fd_.reset();
}

void FscacheCacheFile::writeBlocks(uint64_t offset, std::span<const uint8_t> data) {
    std::shared_lock lock(mutex_);
    if (!fd_) fail("{}: the kernel has not opened this blob (no cachefiles object)", name_);
    writeAll(fd_->get(), data.data(), data.size(), offset, name_);
}

FscacheEngine::FscacheEngine(DataPlane& core, ReadCompleter complete) : core_(core), complete_(std::move(complete)) {}

FscacheEngine::~FscacheEngine() { stop(); }

void FscacheEngine::start(const std::filesystem::path& cache_dir, std::string_view tag) {
    adopt(FscacheDevice::open(cache_dir, tag));
    start(false);
}

void FscacheEngine::adopt(FscacheDevice device) {
    if (device_) fail("fscache engine: already serving {}", FscacheDevice::kPath);
    device_.emplace(std::move(device));
}

void FscacheEngine::start(bool restore) {
    if (started()) return;
    if (!device_) fail("fscache engine: no {} to serve", FscacheDevice::kPath);
    wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_ < 0) failErrno("eventfd");
    if (restore) {
        device_->restore();
        log::info("cachefiles: restore sent; serving the requests a previous daemon left pending");
    }
    thread_ = std::thread([this] { loop(); });
}

void FscacheEngine::loop() {
    io_uring ring{};
    if (int r = io_uring_queue_init(4, &ring, 0); r < 0) {
        log::error("fscache engine: io_uring_queue_init: {}; no requests will be served", std::strerror(-r));
        return;
    }
    // One-shot polls, re-armed after each completion: level semantics without relying on
    // multishot poll (5.13+ only for io_uring; fine, but one-shot keeps the loop obvious).
    auto arm = [&ring](int fd, uint64_t tag) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_poll_add(sqe, fd, POLLIN);
        io_uring_sqe_set_data64(sqe, tag);
    };
    arm(device_->fd(), kDeviceTag);
    arm(wake_, kWakeTag);
    while (!quit_.load()) {
        if (int r = io_uring_submit_and_wait(&ring, 1); r < 0) {
            if (r == -EINTR) continue;
            log::error("fscache engine: io_uring_submit_and_wait: {}", std::strerror(-r));
            break;
        }
        io_uring_cqe* cqe = nullptr;
        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
            const uint64_t tag = io_uring_cqe_get_data64(cqe);
            const int res = cqe->res;
            io_uring_cqe_seen(&ring, cqe);
            if (tag == kWakeTag) continue;  // quit_ is set
            if (res < 0) log::warn("fscache engine: poll on {}: {}", FscacheDevice::kPath, std::strerror(-res));
            drain();
            arm(device_->fd(), kDeviceTag);
        }
    }
    io_uring_queue_exit(&ring);
}

void FscacheEngine::drain() {
    // One message per read(); 0 means nothing is pending (even on a blocking fd).
    alignas(8) std::byte buffer[cachefiles::kMsgMaxSize];
    for (;;) {
        const ssize_t n = ::read(device_->fd(), buffer, sizeof buffer);
        if (n == 0) return;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) log::error("fscache engine: read {}: {}", FscacheDevice::kPath, std::strerror(errno));
            return;
        }
        const std::span<const std::byte> bytes(buffer, static_cast<size_t>(n));
        try {
            handle(bytes);
        } catch (const std::exception& e) {
            log::error("fscache engine: {}", e.what());
        }
    }
}

void FscacheEngine::handle(std::span<const std::byte> bytes) {
    CachefilesMessage msg;
    try {
        msg = parseMessage(bytes);
    } catch (...) {
        // A rejected OPEN still installed an fd in our table.
        if (int fd = openFdOf(bytes); fd >= 0) closeOrWarn(fd, "the anonymous fd of a rejected OPEN");
        throw;
    }
    switch (msg.opcode) {
    case cachefiles::kOpen: handleOpen(msg); break;
    case cachefiles::kRead: handleRead(msg); break;
    case cachefiles::kClose: handleClose(msg); break;
    }
}

void FscacheEngine::handleOpen(const CachefilesMessage& msg) {
    auto fd = std::make_shared<AnonFd>(msg.fd);
    std::unique_lock lock(mutex_);
    const CookieKey key{msg.volume_key, msg.cookie_key};
    auto it = cookies_.find(key);
    if (it == cookies_.end()) {
        ++counters_.refused;
        refused_.push_back(msg.cookie_key);
        lock.unlock();
        log::warn("cachefiles OPEN {}: unknown cookie '{}' in volume '{}'", msg.msg_id, msg.cookie_key,
                  msg.volume_key);
        device_->copen(msg.msg_id, -ENOENT);
        return;  // fd closes here
    }
    const Cookie& cookie = it->second;
    const uint64_t size = cookie.blob ? cookie.blob->descriptor().uncompressed_size : cookie.bootstrap_size;
    device_->copen(msg.msg_id, static_cast<int64_t>(size));
    ++counters_.opens;
    objects_[msg.object_id] = Object{key, fd, false};
    if (cookie.blob) {
        auto& file = dynamic_cast<FscacheCacheFile&>(cookie.blob->cache().file());
        // Stale readiness bits cannot be checked here: the kernel opens the cache file only after
        // copen returns (seeks fail ENOBUFS until then). handleRead() catches them instead.
        file.attach(fd);
    }
    log::debug("cachefiles OPEN {}: object {} = '{}' in '{}', size {}", msg.msg_id, msg.object_id, msg.cookie_key,
               msg.volume_key, size);
}

void FscacheEngine::handleRead(const CachefilesMessage& msg) {
    std::unique_lock lock(mutex_);
    ++counters_.reads;
    auto obj = objects_.find(msg.object_id);
    if (obj == objects_.end()) {
        ++read_stats_->errors;
        fail("cachefiles READ {}: unknown object {}", msg.msg_id, msg.object_id);
    }
    Object& object = obj->second;
    std::shared_ptr<AnonFd> fd = object.fd;
    auto it = cookies_.find(object.key);
    if (it == cookies_.end() || it->second.users.empty()) {
        ++read_stats_->errors;
        lock.unlock();
        log::warn("cachefiles READ {}: object {} ('{}') is no longer registered", msg.msg_id, msg.object_id,
                  object.key.second);
        complete_(fd->get(), msg.msg_id);
        return;
    }
    Cookie& cookie = it->second;
    if (!cookie.blob) {
        // The bootstrap: written whole at its first READ (the object surely has its backing file
        // then, which right after copen it may not yet — ENOBUFS), later READs only their range.
        const uint64_t padded = roundUp(cookie.bootstrap_size);
        uint64_t begin = 0;
        uint64_t end = padded;
        if (object.bootstrap_written) {
            begin = std::min(msg.offset / kBlock * kBlock, padded);
            end = std::min(roundUp(msg.offset + msg.length), padded);
        }
        auto data = cookie.bootstrap;
        const bool first = !object.bootstrap_written;
        lock.unlock();
        try {
            writeAll(fd->get(), data.get() + begin, end - begin, begin, "bootstrap " + object.key.second);
            if (first) {
                std::lock_guard relock(mutex_);
                if (auto again = objects_.find(msg.object_id); again != objects_.end()) again->second.bootstrap_written = true;
            }
        } catch (const std::exception& e) {
            log::error("cachefiles READ {}: {}", msg.msg_id, e.what());
            ++read_stats_->errors;
        }
        complete_(fd->get(), msg.msg_id);
        return;
    }
    ++counters_.blob_reads;
    const auto [image, blob] = cookie.users.front();
    std::shared_ptr<CachedBlob> cached = cookie.blob;
    lock.unlock();
    // The kernel asks only for holes of its cache file. A chunk there that our bitmap calls present
    // lost its data (the kernel recreated the file, or a crash dropped a tmpfile never linked in):
    // recheck the bitmap against the file, else the READ would complete over the hole and the
    // reader would get EIO for data we can fetch.
    BlobCache& cache = cached->cache();
    const ChunkRange range = cache.chunksCovering(msg.offset, msg.length);
    for (uint32_t ci = range.begin; ci < range.end; ++ci) {
        if (!cache.isPresent(ci)) continue;
        const uint32_t dropped = cache.validate();
        if (dropped != 0) {
            log::warn("blob {}: {} chunks marked present are not in the kernel's cache file; fetching them again",
                      cached->descriptor().id, dropped);
            std::lock_guard relock(mutex_);
            counters_.stale_chunks += dropped;
        }
        break;
    }
    const auto received = std::chrono::steady_clock::now();
    core_.makePresent(image, blob, msg.offset, msg.length,
                      [stats = read_stats_, complete = complete_, fd, id = msg.msg_id, received](int error) {
                          if (error != 0) {
                              log::warn("cachefiles READ {}: {}; the reader gets EIO", id, std::strerror(error));
                              ++stats->errors;
                          }
                          complete(fd->get(), id);
                          const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::steady_clock::now() - received);
                          std::lock_guard stats_lock(stats->mutex);
                          if (stats->latencies_us.size() < kMaxLatencySamples) {
                              stats->latencies_us.push_back(static_cast<uint32_t>(
                                  std::min<int64_t>(us.count(), std::numeric_limits<uint32_t>::max())));
                          }
                      });
}

void FscacheEngine::handleClose(const CachefilesMessage& msg) {
    std::lock_guard lock(mutex_);
    ++counters_.closes;
    auto obj = objects_.find(msg.object_id);
    if (obj == objects_.end()) {
        log::warn("cachefiles CLOSE {}: unknown object {}", msg.msg_id, msg.object_id);
        return;
    }
    if (auto it = cookies_.find(obj->second.key); it != cookies_.end() && it->second.blob) {
        dynamic_cast<FscacheCacheFile&>(it->second.blob->cache().file()).detach(*obj->second.fd);
    }
    objects_.erase(obj);
}

void FscacheEngine::registerMount(const FscacheMount& m) {
    MountEntry entry{m.image, m.mountpoint, {}};
    const std::string volume = volumeKey(m);
    {
        std::lock_guard lock(mutex_);
        for (const MountEntry& e : mounts_) {
            if (e.mountpoint == m.mountpoint) fail("{} is already mounted by the fscache engine", m.mountpoint.string());
        }
        const CookieKey boot{volume, m.fsid};
        if (cookies_.count(boot) != 0) fail("fsid '{}' is already in use in volume '{}'", m.fsid, volume);
        // Every check before the first insertion: a refused mount must leave no cookie behind.
        for (const FscacheBlob& b : m.blobs) {
            auto it = cookies_.find(CookieKey{volume, b.cookie});
            if (it != cookies_.end() && it->second.blob && it->second.blob != b.cached) {
                fail("blob '{}' in volume '{}' is another blob's", b.cookie, volume);
            }
        }
        void* raw = nullptr;
        const uint64_t padded = roundUp(m.bootstrap.size());
        if (int r = ::posix_memalign(&raw, kBlock, padded); r != 0) failErrno("posix_memalign", r);
        std::shared_ptr<uint8_t> copy(static_cast<uint8_t*>(raw), std::free);
        std::memcpy(copy.get(), m.bootstrap.data(), m.bootstrap.size());
        std::memset(copy.get() + m.bootstrap.size(), 0, padded - m.bootstrap.size());
        Cookie& c = cookies_[boot];
        c.bootstrap = std::move(copy);
        c.bootstrap_size = m.bootstrap.size();
        c.users.emplace_back(m.image, 0);
        entry.cookies.push_back(boot);
        for (const FscacheBlob& b : m.blobs) {
            const CookieKey key{volume, b.cookie};
            Cookie& blob = cookies_[key];
            blob.blob = b.cached;
            blob.users.emplace_back(m.image, b.blob);
            entry.cookies.push_back(key);
        }
        refused_.clear();
        mounts_.push_back(entry);
    }
}

void FscacheEngine::reattach(const FscacheMount& m) {
    registerMount(m);
    log::info("{}: reattached (fsid {}); its objects are reopened on demand", m.mountpoint.string(), m.fsid);
}

bool FscacheEngine::validName(std::string_view name) {
    return !name.empty() && name.size() <= 128 && std::ranges::all_of(name, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == ':' || c == '-';
    });
}

std::string FscacheEngine::mountOptions(const std::string& fsid, const std::string& domain_id) {
    return domain_id.empty() ? "fsid=" + fsid : "fsid=" + fsid + ",domain_id=" + domain_id;
}

void FscacheEngine::mount(const FscacheMount& m) {
    if (!started()) fail("fscache engine: mount before start");
    registerMount(m);
    const std::string options = mountOptions(m.fsid, m.domain_id);
    if (::mount("none", m.mountpoint.c_str(), "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID, options.c_str()) != 0) {
        const int err = errno;
        std::string refused;
        {
            std::lock_guard lock(mutex_);
            for (const auto& r : refused_) refused += (refused.empty() ? "" : ", ") + r;
            auto it = std::find_if(mounts_.begin(), mounts_.end(),
                                   [&](const MountEntry& e) { return e.mountpoint == m.mountpoint; });
            unregister(*it);
            mounts_.erase(it);
        }
        if (!refused.empty()) {
            fail("mount -t erofs -o {} on {}: {} (the kernel asked for unknown cookies: {})", options,
                 m.mountpoint.string(), std::strerror(err), refused);
        }
        failErrno(fmt::format("mount -t erofs -o {} on {}", options, m.mountpoint.string()), err);
    }
}

void FscacheEngine::unregister(const MountEntry& entry) {
    for (const CookieKey& key : entry.cookies) {
        auto it = cookies_.find(key);
        if (it == cookies_.end()) continue;
        auto& users = it->second.users;
        users.erase(std::remove_if(users.begin(), users.end(), [&](const auto& u) { return u.first == entry.image; }),
                    users.end());
        if (users.empty()) cookies_.erase(it);
    }
}

void FscacheEngine::umount(const std::filesystem::path& mountpoint) {
    // EINVAL: not a mount point, i.e. an image registered for a mount by hand that is not there.
    if (::umount2(mountpoint.c_str(), 0) != 0 && errno != EINVAL) failErrno("umount " + mountpoint.string());
    std::lock_guard lock(mutex_);
    auto it = std::find_if(mounts_.begin(), mounts_.end(), [&](const MountEntry& e) { return e.mountpoint == mountpoint; });
    if (it == mounts_.end()) return;
    unregister(*it);
    mounts_.erase(it);
}

void FscacheEngine::stop() {
    if (!thread_.joinable()) {
        device_.reset();
        if (wake_ >= 0) closeOrWarn(wake_, "eventfd");
        wake_ = -1;
        return;
    }
    std::vector<std::filesystem::path> mountpoints;
    {
        std::lock_guard lock(mutex_);
        for (const MountEntry& e : mounts_) mountpoints.push_back(e.mountpoint);
    }
    // Unmount while the loop still serves: closing the device first would leave the mounts dead.
    for (const auto& mp : mountpoints) {
        try {
            umount(mp);
        } catch (const std::exception& e) {
            log::warn("{}; detaching it", e.what());
            if (::umount2(mp.c_str(), MNT_DETACH) != 0) log::error("umount -l {}: {}", mp.string(), std::strerror(errno));
        }
    }
    quit_.store(true);
    const uint64_t one = 1;
    if (::write(wake_, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
        log::error("fscache engine: waking the loop: {}", std::strerror(errno));
    }
    thread_.join();
    {
        std::lock_guard lock(mutex_);
        objects_.clear();
        cookies_.clear();
        mounts_.clear();
    }
    closeOrWarn(wake_, "eventfd");
    wake_ = -1;
    device_.reset();
}

FscacheCounters FscacheEngine::counters() const {
    std::lock_guard lock(mutex_);
    FscacheCounters c = counters_;
    c.read_errors = read_stats_->errors.load();
    std::vector<uint32_t> samples;
    {
        std::lock_guard stats_lock(read_stats_->mutex);
        samples = read_stats_->latencies_us;
    }
    if (!samples.empty()) {
        auto percentile = [&samples](size_t p) {
            const size_t at = (samples.size() - 1) * p / 100;
            std::nth_element(samples.begin(), samples.begin() + static_cast<ptrdiff_t>(at), samples.end());
            return uint64_t{samples[at]};
        };
        c.read_latency_p50_us = percentile(50);
        c.read_latency_p99_us = percentile(99);
    }
    return c;
}

}  // namespace rafsd
