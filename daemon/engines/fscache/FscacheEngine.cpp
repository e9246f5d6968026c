#include "daemon/engines/fscache/FscacheEngine.h"

#include "format/Error.h"
#include "daemon/core/Log.h"
#include "format/UniqueFd.h"
#include "daemon/core/CloseOrWarn.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sched.h>
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

// Completions the ring holds: multishot polls post one per wakeup of the device, and the loop
// reaps them between drains.
constexpr unsigned kCompletions = 64;

struct RingExit {
    void operator()(io_uring* ring) const {
        io_uring_queue_exit(ring);
        delete ring;
    }
};
using Ring = std::unique_ptr<io_uring, RingExit>;

std::string volumeKey(const FscacheMount& m) { return "erofs," + (m.domain_id.empty() ? m.fsid : m.domain_id); }

}  // namespace

void cachefilesReadComplete(int anon_fd, uint32_t msg_id) {
    if (::ioctl(anon_fd, cachefiles::kIocReadComplete, static_cast<unsigned long>(msg_id)) == 0) return;
    // EINVAL: the kernel holds no such request any more (fs/cachefiles/ondemand.c,
    // cachefiles_ondemand_fd_ioctl): its reader was killed while it waited, which is no fault.
    if (errno == EINVAL) {
        log::info("cachefiles READ {}: its reader no longer waits (killed?); nothing to complete", msg_id);
    } else {
        log::warn("cachefiles READ {}: READ_COMPLETE: {}", msg_id, std::strerror(errno));
    }
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
    // Made here, not on the loop's thread: a kernel that refuses io_uring (io_uring_disabled)
    // fails the start with an error instead of every worker after it.
    auto made = std::make_unique<io_uring>();
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = kCompletions;
    if (int r = io_uring_queue_init_params(4, made.get(), &params); r < 0) failErrno("io_uring for the fscache engine", -r);
    Ring ring(made.release());  // from now on with io_uring_queue_exit
    if (restore) {
        device_->restore();
        log::info("cachefiles: restore sent; serving the requests a previous daemon left pending");
    }
    thread_ = std::thread([this, ring = std::move(ring)] { loop(*ring); });
}

void FscacheEngine::loop(io_uring& ring) {
    // Without this loop the kernel's requests would wait for good. Ended at once (no unwinding,
    // which would unmount), the worker is followed by another that takes the device over.
    const auto giveUp = [](std::string_view what, int err) {
        log::error("fscache engine: {}: {}; ending the worker so that another takes over", what, std::strerror(err));
        std::abort();
    };
    // Multishot polls (io_uring 5.13+): one completion per wakeup of the device, that is per new
    // request, and drain() reads every request there is. A one-shot poll re-armed after each
    // drain would complete at once, again and again, on kernels whose device stays readable while
    // any request is outstanding, READs still being fetched included (cachefiles_daemon_poll in
    // fs/cachefiles/daemon.c before the change that looks only at new requests: 6.8, and
    // backported to some stable kernels), spinning a CPU for as long as a fetch takes.
    auto arm = [&ring](int fd, uint64_t tag) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_poll_multishot(sqe, fd, POLLIN);
        io_uring_sqe_set_data64(sqe, tag);
    };
    arm(device_->fd(), kDeviceTag);
    arm(wake_, kWakeTag);
    while (!quit_.load()) {
        if (int r = io_uring_submit_and_wait(&ring, 1); r < 0) {
            // EBUSY: completions overflowed the queue; reaping them below makes room.
            if (r != -EINTR && r != -EBUSY) giveUp("io_uring_submit_and_wait", -r);
        }
        io_uring_cqe* cqe = nullptr;
        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
            const uint64_t tag = io_uring_cqe_get_data64(cqe);
            const int res = cqe->res;
            const bool armed = (cqe->flags & IORING_CQE_F_MORE) != 0;
            io_uring_cqe_seen(&ring, cqe);
            if (tag == kWakeTag) continue;  // quit_ is set
            if (res < 0) log::warn("fscache engine: poll on {}: {}", FscacheDevice::kPath, std::strerror(-res));
            drain();
            if (!armed) arm(device_->fd(), kDeviceTag);  // the kernel ended the multishot poll
        }
    }
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
    const CookieTable::Key key{msg.volume_key, msg.cookie_key};
    const CookieTable::Cookie* found = cookies_.find(key);
    if (found == nullptr) {
        ++counters_.refused;
        cookies_.refuse(msg.cookie_key);
        lock.unlock();
        log::warn("cachefiles OPEN {}: unknown cookie '{}' in volume '{}'", msg.msg_id, msg.cookie_key,
                  msg.volume_key);
        device_->copen(msg.msg_id, -ENOENT);
        return;  // fd closes here
    }
    const CookieTable::Cookie& cookie = *found;
    const uint64_t size = cookie.size();
    device_->copen(msg.msg_id, static_cast<int64_t>(size));
    ++counters_.opens;
    objects_[msg.object_id] = Object{key, fd, false};
    if (cookie.blob) {
        // Stale readiness bits cannot be checked here: the kernel opens the cache file only after
        // copen returns (seeks fail ENOBUFS until then). handleRead() catches them instead.
        cookie.blob->attach(fd);
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
    const CookieTable::Cookie* found = cookies_.find(object.key);
    if (found == nullptr) {
        ++read_stats_->errors;
        lock.unlock();
        log::warn("cachefiles READ {}: object {} ('{}') is no longer registered", msg.msg_id, msg.object_id,
                  object.key.second);
        complete_(fd->get(), msg.msg_id);
        return;
    }
    const CookieTable::Cookie& cookie = *found;
    if (!cookie.blob) {
        std::shared_ptr<const FscacheBootstrap> bootstrap = cookie.bootstrap;
        const bool first = !object.bootstrap_written;
        lock.unlock();
        try {
            bootstrap->write(fd->get(), msg.offset, msg.length, first, "bootstrap " + object.key.second);
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
    const std::string blob_id = object.key.second;
    lock.unlock();
    // The kernel asks only for holes of its cache file. A chunk there that our bitmap calls present
    // lost its data (the kernel recreated the file, or a crash dropped a tmpfile never linked in):
    // forget it, else the READ would complete over the hole and the reader would get EIO for data
    // we can fetch. Should that fail (the chunk map cannot be written), or the fetch not even
    // start, the READ is completed without its data, so that the reader gets EIO instead of
    // waiting until the device closes.
    // Once, whoever comes first: the core's completion, or this function when the core throws,
    // also after it completed (a failed allocation past the answer). A second completion could
    // end a newer READ of the object that reuses the id, before its data is there.
    const auto received = std::chrono::steady_clock::now();
    const Completion answer = once([stats = read_stats_, complete = complete_, fd, id = msg.msg_id, received](int error) {
        if (error != 0) {
            if (const auto held_back = stats->failures.admit()) {
                log::warn("cachefiles READ {}: {}; the reader gets EIO{}", id, std::strerror(error),
                          RepeatedFailureLog::heldBack(*held_back, "failed READs"));
            }
            ++stats->errors;
        }
        complete(fd->get(), id);
        stats->latency.add(
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - received));
    });
    try {
        if (const uint32_t dropped = core_.forgetLost(image, blob, msg.offset, msg.length); dropped != 0) {
            log::warn("blob {}: {} chunks marked present are not in the kernel's cache file; fetching them again",
                      blob_id, dropped);
            std::lock_guard relock(mutex_);
            counters_.stale_chunks += dropped;
        }
        core_.makePresent(image, blob, msg.offset, msg.length, answer);
    } catch (const std::exception& e) {
        log::error("cachefiles READ {}: blob {}: {}", msg.msg_id, blob_id, e.what());
        answer(EIO);  // nothing if the core completed it before it threw
    }
}

void FscacheEngine::handleClose(const CachefilesMessage& msg) {
    std::lock_guard lock(mutex_);
    ++counters_.closes;
    auto obj = objects_.find(msg.object_id);
    if (obj == objects_.end()) {
        log::warn("cachefiles CLOSE {}: unknown object {}", msg.msg_id, msg.object_id);
        return;
    }
    if (const CookieTable::Cookie* cookie = cookies_.find(obj->second.key); cookie != nullptr && cookie->blob) {
        cookie->blob->detach(*obj->second.fd);
    }
    objects_.erase(obj);
}

void FscacheEngine::registerMount(const FscacheMount& m) {
    std::vector<CookieTable::BlobCookie> blobs;
    for (const FscacheBlob& b : m.blobs) blobs.push_back({b.blob, b.cookie, b.size, b.fd});
    std::lock_guard lock(mutex_);
    cookies_.add(m.image, m.mountpoint, volumeKey(m), m.fsid, m.bootstrap, blobs);
}

void FscacheEngine::reattach(const FscacheMount& m) {
    registerMount(m);
    // Both a register-only mount and a reattach come here: the log says what both are.
    log::info("{}: fsid {} registered; the kernel opens its objects on demand", m.mountpoint.string(), m.fsid);
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
            for (const auto& r : cookies_.refused()) refused += (refused.empty() ? "" : ", ") + r;
            cookies_.remove(m.mountpoint);
        }
        if (!refused.empty()) {
            fail("mount -t erofs -o {} on {}: {} (the kernel asked for unknown cookies: {})", options,
                 m.mountpoint.string(), std::strerror(err), refused);
        }
        // One superblock per fsid: a second is EBUSY (fs/fscache/volume.c, a volume's collision),
        // or EEXIST within a domain (fs/erofs/fscache.c, erofs_domain_register_cookie).
        if (err == EBUSY || err == EEXIST) {
            fail("mount -t erofs -o {} on {}: {} (another EROFS mount holds this fsid: unmount it, or mount under "
                 "another --fsid)", options, m.mountpoint.string(), std::strerror(err));
        }
        failErrno(fmt::format("mount -t erofs -o {} on {}", options, m.mountpoint.string()), err);
    }
}

void FscacheEngine::umount(const std::filesystem::path& mountpoint) {
    // EINVAL: not a mount point, i.e. an image registered for a mount by hand that is not there.
    if (::umount2(mountpoint.c_str(), 0) != 0 && errno != EINVAL) failErrno("umount " + mountpoint.string());
    std::lock_guard lock(mutex_);
    cookies_.remove(mountpoint);
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
        mountpoints = cookies_.mountpoints();
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
    }
    closeOrWarn(wake_, "eventfd");
    wake_ = -1;
    std::lock_guard lock(device_mutex_);
    device_.reset();
}

void FscacheEngine::cull(const std::filesystem::path& dir, const std::string& name) {
    // A working directory of this thread's own, so the chdir below moves no other thread.
    thread_local const bool own_cwd = ::unshare(CLONE_FS) == 0;
    if (!own_cwd) failErrno("unshare(CLONE_FS) for cachefiles' cull");
    if (::chdir(dir.c_str()) != 0) failErrno(fmt::format("cannot cull in {}", dir.string()));
    std::lock_guard lock(device_mutex_);
    if (!device_) fail("cannot cull {}: the fscache engine has stopped", (dir / name).string());
    device_->command("cull " + name);
}

std::vector<std::pair<CookieTable::Key, uint64_t>> FscacheEngine::openObjectData() const {
    std::vector<std::pair<CookieTable::Key, std::shared_ptr<AnonFd>>> open;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [id, object] : objects_) open.emplace_back(object.key, object.fd);
    }
    std::vector<std::pair<CookieTable::Key, uint64_t>> out;
    for (const auto& [key, fd] : open) out.emplace_back(key, objectDataBytes(fd->get()));
    return out;
}

FscacheCounters FscacheEngine::counters() const {
    std::lock_guard lock(mutex_);
    FscacheCounters c = counters_;
    c.read_errors = read_stats_->errors.load();
    c.read_latency_p50_us = read_stats_->latency.percentileUs(50);
    c.read_latency_p99_us = read_stats_->latency.percentileUs(99);
    return c;
}

}  // namespace rafsd
