#include "daemon/engines/fanotify/FanotifyEngine.h"
#include "format/ByteView.h"

#include "format/Error.h"
#include "format/FileIo.h"
#include "daemon/core/CloseOrWarn.h"
#include "daemon/core/CompletionCount.h"
#include "daemon/core/Log.h"
#include "daemon/engines/fanotify/ErofsFileMount.h"
#include "daemon/engines/fanotify/EventResponder.h"
#include "daemon/engines/fanotify/FanotifyGroup.h"
#include "daemon/engines/fanotify/MarkedFiles.h"
#include "kernel-abi/fanotify.h"

#include <liburing.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>

namespace rafsd {

namespace {

using rafs::fail;
using rafs::failErrno;

constexpr unsigned kRingEntries = 4;
constexpr uint64_t kGroupTag = 1;
constexpr uint64_t kWakeTag = 2;
constexpr uint64_t kBlock = 4096;
// What to fetch for a read of no length: erofs-utils fetches 4 MiB too.
constexpr uint64_t kUnknownCountWindow = 4 << 20;

void armPoll(io_uring& ring, int fd, uint64_t tag) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) fail("io_uring submission queue full");
    io_uring_prep_poll_multishot(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag);
}

void submit(io_uring& ring) {
    if (const int rc = io_uring_submit(&ring); rc < 0) failErrno("io_uring_submit", -rc);
}

// The block-aligned range to make present for a read of [offset, offset + count) of a file of
// `size` bytes (offset < size); the kernel's count is the read's, not rounded. An event without a
// range may read anything: the whole file, never a guess that could leave a hole allowed.
std::pair<uint64_t, uint64_t> fetchRange(uint64_t offset, uint64_t count, uint64_t size) {
    if (count == FanotifyEvent::kWholeFile) return {0, size};
    const uint64_t begin = offset & ~(kBlock - 1);
    const uint64_t want = count == 0 ? kUnknownCountWindow : count;
    const uint64_t end = want >= size - offset ? size : std::min(size, rafs::alignUp(offset + want, kBlock));
    return {begin, end};
}

}  // namespace

FanotifyEngine::FanotifyEngine(DataPlane& core, std::chrono::microseconds busy_poll)
    : core_(core), busy_poll_(busy_poll) {}

FanotifyEngine::~FanotifyEngine() { stop(); }

void FanotifyEngine::checkKernel() { checkPreContentKernel(); }

rafs::UniqueFd FanotifyEngine::createGroup() { return createPreContentGroup(); }

void FanotifyEngine::adopt(rafs::UniqueFd group, PendingJournal journal) {
    if (responder_) fail("fanotify engine already has a group");
    auto responder = std::make_shared<EventResponder>(std::move(group), std::move(journal));
    // From now on, not only once it serves: a restarted rafsd taking the group from systemd's fd
    // store ends the process the journal names, and this one may read the group before then
    // (answering orphans), or soon.
    responder->journal().setOwner(ProcessIdentity::self());
    files_ = std::make_unique<MarkedFiles>(responder->group());
    responder_ = std::move(responder);
}

void FanotifyEngine::start() {
    if (thread_.joinable()) fail("fanotify engine already started");
    raiseFdLimit();
    if (!responder_) {
        adopt(createGroup(), PendingJournal::create());
        group_held_elsewhere_ = false;
    }
    rafs::UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (wake.get() < 0) failErrno("eventfd");
    wake_ = wake.release();
    responder_->setWake(wake_);
    try {
        answerOrphans();
    } catch (...) {
        teardown();
        throw;
    }
    std::promise<void> started;
    std::future<void> ready = started.get_future();
    try {
        thread_ = std::thread(&FanotifyEngine::loop, this, std::move(started));
    } catch (...) {
        teardown();
        throw;
    }
    try {
        ready.get();
    } catch (...) {
        thread_.join();
        teardown();
        throw;
    }
}

// Completes the events a dead worker read and left unanswered, before any new event is read: an
// answer is matched by fd number only, and new events reuse the dead worker's numbers. An orphan
// is allowed only once its range is present; one whose file is not known (it was read but not yet
// recorded) is allowed once the range is present in every file served, and denied with EIO if that
// fails, no file is served, or a mount the dead worker served is not (its files are not known).
void FanotifyEngine::answerOrphans() {
    EventResponder& responder = *responder_;
    const std::vector<PendingJournal::Entry> orphans = responder.journal().orphans();
    if (!orphans.empty()) {
        log::warn("fanotify: answering {} events a previous worker read but did not answer", orphans.size());
        struct Target {
            uint32_t image, blob;
            uint64_t begin, end;
        };
        const auto answered = CompletionCount::make();
        for (const PendingJournal::Entry& orphan : orphans) {
            const bool known = orphan.dev != 0 || orphan.ino != 0;
            const bool whole = orphan.count == FanotifyEvent::kWholeFile;
            // Of no known file and no range, it could be any byte of any served file: filling
            // them all could take the whole cache.
            if (!known && whole) {
                log::error("fanotify: orphaned event fd {}: neither its file nor its range is known, denying",
                           orphan.fd);
                responder.answerOrphan(orphan.fd, false);
                continue;
            }
            if (!known && !unserved_.empty()) {
                log::error("fanotify: orphaned event fd {}: its file is not known and {} is not served, denying",
                           orphan.fd, unserved_.front().native());
                responder.answerOrphan(orphan.fd, false);
                continue;
            }
            std::vector<Target> targets;
            for (const auto& [key, served] : files_->all()) {
                if (known && key != MarkedFiles::FileKey{orphan.dev, orphan.ino}) continue;
                if (orphan.offset >= served.size) continue;
                const auto [begin, end] = fetchRange(orphan.offset, orphan.count, served.size);
                targets.push_back({served.image, served.blob, begin, end});
            }
            log::info("fanotify: orphaned event fd {} for {}, {} files to fill", orphan.fd,
                      whole ? std::string("the whole file") : fmt::format("[{}, +{})", orphan.offset, orphan.count),
                      targets.size());
            if (targets.empty()) {
                log::error("fanotify: orphaned event fd {}: its file is not served, denying", orphan.fd);
                responder.answerOrphan(orphan.fd, false);
                continue;
            }
            struct Answer {
                int fd;
                size_t left;
                bool ok = true;
                std::mutex mutex;
            };
            auto answer = std::make_shared<Answer>(orphan.fd, targets.size());
            const Completion counted = answered->add();
            for (const Target& t : targets) {
                auto finish = [answer, counted, shared = responder_](int error) {
                    bool last = false;
                    bool ok = false;
                    {
                        std::lock_guard lock(answer->mutex);
                        if (error != 0) answer->ok = false;
                        last = --answer->left == 0;
                        ok = answer->ok;
                    }
                    if (!last) return;
                    shared->answerOrphan(answer->fd, ok);
                    counted(0);
                };
                try {
                    core_.makePresent(t.image, t.blob, t.begin, t.end - t.begin, finish);
                } catch (const std::exception& e) {
                    log::error("cannot make [{}, {}) of blob {} of image {} present: {}", t.begin, t.end, t.blob,
                               t.image, e.what());
                    finish(EIO);
                }
            }
        }
        answered->wait();
        log::info("fanotify: every orphaned event answered");
    }
    responder.resetJournal();
}

void FanotifyEngine::teardown() {
    {
        std::lock_guard lock(wake_mutex_);
        closeOrWarn(wake_, "eventfd");
        wake_ = -1;
    }
    responder_->closeGroup();
}

// Why poll-then-read rather than a read SQE: fanotify files have no read_iter and no
// FMODE_NOWAIT, so io_uring cannot try the read inline; depending on the kernel a read SQE on this
// O_NONBLOCK fd either completes at once with -EAGAIN (a busy loop) or is punted to an io-wq
// worker that polls and retries, with a kernel-owned buffer that stop() would have to cancel.
// A multishot poll plus plain read(2) until EAGAIN keeps the buffer ours, drains whole batches,
// and needs no resubmission per event.
void FanotifyEngine::loop(std::promise<void> started) {
    // The ring is created, fed and waited on by this thread alone: io_uring runs a request's
    // completion work in the task that submitted it, and a thread that submitted a poll and then
    // read the mount would sit in the kernel's pre-content wait, never running it (deadlock).
    io_uring ring{};
    try {
        const int rc = io_uring_queue_init(kRingEntries, &ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
        if (rc < 0) failErrno("io_uring_queue_init", -rc);
    } catch (...) {
        started.set_exception(std::current_exception());
        return;
    }
    try {
        armPoll(ring, responder_->group(), kGroupTag);
        armPoll(ring, wake_, kWakeTag);
        submit(ring);
    } catch (...) {
        io_uring_queue_exit(&ring);
        started.set_exception(std::current_exception());
        return;
    }
    started.set_value();
    try {
        while (!quit_.load()) {
            io_uring_cqe* cqe = nullptr;
            // Marks kept for start traces are dropped when due: the wait ends then at the latest.
            int rc = 0;
            if (const auto due = files_->unmarkDeferred()) {
                const int64_t left = std::max<int64_t>(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(*due - std::chrono::steady_clock::now()).count(),
                    1'000'000);  // at least 1 ms: no busy loop
                __kernel_timespec timeout{left / 1'000'000'000, left % 1'000'000'000};
                rc = io_uring_wait_cqe_timeout(&ring, &cqe, &timeout);
                if (rc == -ETIME) continue;
            } else {
                rc = io_uring_wait_cqe(&ring, &cqe);
            }
            if (rc == -EINTR) continue;
            if (rc < 0) failErrno("io_uring_wait_cqe", -rc);
            const uint64_t tag = io_uring_cqe_get_data64(cqe);
            const int res = cqe->res;
            const bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
            io_uring_cqe_seen(&ring, cqe);
            if (res < 0) failErrno(tag == kGroupTag ? "poll on the fanotify group" : "poll on the eventfd", -res);
            if (tag == kWakeTag && !quit_.load()) {
                // Journal slots freed up after the loop ran short of them.
                uint64_t count = 0;
                if (::read(wake_, &count, sizeof count) < 0 && errno != EAGAIN) failErrno("read of the eventfd");
            }
            if (!quit_.load()) pollEvents();
            if (!more) {
                armPoll(ring, tag == kGroupTag ? responder_->group() : wake_, tag);
                submit(ring);
            }
        }
        // Events queued since the last wakeup; the engine is stopping, so they are denied.
        drainEvents();
    } catch (const std::exception& e) {
        // Its readers would wait for good. Ended at once (no unwinding, which would unmount), the
        // worker is followed by another that takes the group over and answers what this one left.
        // Not a group only this process holds: its release would let every waiting reader see
        // the holes as zeros; those readers wait instead.
        if (group_held_elsewhere_) {
            log::error("fanotify event loop failed: {}; ending the worker so that another takes over", e.what());
            std::abort();
        }
        log::error("fanotify event loop failed, events are no longer answered: {}", e.what());
    }
    io_uring_queue_exit(&ring);
}

// Handles the queued events, then keeps reading until none came for busy_poll_: the poll CQEs the
// events raise meanwhile find an empty queue later, which costs one read each. Between reads the
// loop yields its CPU to any thread ready to run there: polling pays only on a CPU that would
// otherwise idle, and on a busy one it took the CPU from the fetch threads' decoding, the reader
// and other programs (docs/benchmarks.md, "the io_uring write path, measured": in an A/B of a
// cold read with prefetch off, 0.42 s of worker CPU instead of 0.56 s, 0.58 s instead of 0.67 s).
void FanotifyEngine::pollEvents() {
    drainEvents();
    if (busy_poll_.count() == 0) return;
    auto until = std::chrono::steady_clock::now() + busy_poll_;
    while (!quit_.load(std::memory_order_relaxed)) {
        const auto now = std::chrono::steady_clock::now();
        if (drainEvents()) {
            until = now + busy_poll_;
        } else if (now >= until) {
            return;
        } else {
            ::sched_yield();
        }
    }
}

bool FanotifyEngine::drainEvents() {
    EventResponder& responder = *responder_;
    PendingJournal& journal = responder.journal();
    bool any = false;
    for (;;) {
        // A full batch must fit in the journal; the loop is woken when enough slots are free.
        if (!responder.hasRoomForBatch()) return any;
        const std::span<std::byte> area = journal.beginBatch();
        const ssize_t n = ::read(responder.group(), area.data(), area.size());
        if (n <= 0) {
            journal.endBatch(0);
            if (n == 0) return any;
            if (errno == EAGAIN) return any;
            if (errno == EINTR) continue;
            // EINVAL (no room for an event) and EFAULT are this loop's own fault, and reading again
            // would fail again. Any other error is the kernel failing to hand one event over (to
            // open its fd: out of fds or memory, or refused by a security module), which it then
            // denied itself (fanotify_read in fs/notify/fanotify/fanotify_user.c): its reader got
            // an error, and the next read goes on with the next event.
            if (errno == EINVAL || errno == EFAULT) failErrno("cannot read fanotify events");
            log::error("fanotify event denied by the kernel, which could not hand it to rafsd: {}",
                       std::strerror(errno));
            continue;
        }
        any = true;
        // Every event is recorded with its file before any is handled (PendingJournal.h).
        batch_.clear();
        forEachEvent(area.first(static_cast<size_t>(n)), [&](const FanotifyEvent& event) {
            ReadEvent read{event, 0, 0, 0};
            if (event.fd != fanotify::kNoFd) {
                struct stat st {};
                if (::fstat(event.fd, &st) == 0) {
                    read.dev = st.st_dev;
                    read.ino = st.st_ino;
                }
                read.slot = responder.record({event.fd, read.dev, read.ino, event.offset, event.count});
            }
            batch_.push_back(read);
        });
        journal.endBatch(static_cast<size_t>(n));
        for (const ReadEvent& event : batch_) handleEvent(event);
    }
}

void FanotifyEngine::handleEvent(const ReadEvent& read) {
    EventResponder& responder = *responder_;
    const FanotifyEvent& event = read.event;
    const int fd = event.fd;
    if ((event.mask & fanotify::kQueueOverflow) != 0) {
        responder.overflows.fetch_add(1, std::memory_order_relaxed);
        log::error("fanotify queue overflow: events were lost, their reads may have gone on unfilled");
    }
    if (fd == fanotify::kNoFd) return;
    if ((event.mask & fanotify::kPreAccess) == 0) {
        responder.respond(fd, read.slot, true);
        return;
    }
    responder.events.fetch_add(1, std::memory_order_relaxed);
    if (read.dev == 0 && read.ino == 0) {
        log::error("cannot stat a fanotify event's file, denying");
        responder.respond(fd, read.slot, false);
        return;
    }
    const std::optional<MarkedFiles::Served> served = files_->find({read.dev, read.ino});
    if (!served) {
        // Files stay in the table until unmounted, complete ones too, so a file not there is one
        // this worker does not serve (a mount it could not take over): never allow over holes.
        // Named by its path where the kernel still has one: a blob's cache file tells the operator
        // which image (a mount being unmounted as the event came, or one not taken over).
        const std::optional<std::string> path = rafs::pathOfFd(fd);
        log::error("fanotify event for a file not served ({}dev {} inode {}), denying", path ? *path + ", " : "",
                   read.dev, read.ino);
        responder.respond(fd, read.slot, false);
        return;
    }
    const auto [image, blob, size] = *served;
    if (event.offset >= size) {
        // Nothing of the blob is there: the image and the cache file disagree on its size.
        log::warn("fanotify: read at {} past the end ({}) of blob {} of image {}, denying", event.offset, size, blob,
                  image);
        responder.respond(fd, read.slot, false);
        return;
    }
    const auto [begin, end] = fetchRange(event.offset, event.count, size);
    log::debug("fanotify: pid {} reads [{}, +{}) of image {} blob {}, fetching [{}, {})", event.pid, event.offset,
               event.count, image, blob, begin, end);
    const std::optional<uint64_t> seq = responder.admit(fd, read.slot);
    if (!seq) {
        responder.respond(fd, read.slot, false);
        return;
    }
    try {
        core_.makePresent(image, blob, begin, end - begin,
                          [shared = responder_, fd, s = *seq](int error) { shared->complete(fd, s, error); });
    } catch (const std::exception& e) {
        log::error("cannot make [{}, {}) of blob {} of image {} present: {}", begin, end, blob, image, e.what());
        responder.complete(fd, *seq, EIO);
    }
}

void FanotifyEngine::mount(const FanotifyMount& m, const std::function<void(int superblock_watch)>& attaching) {
    if (!thread_.joinable()) fail("cannot mount {}: fanotify engine not running", m.mountpoint.native());
    const std::filesystem::path name = m.mountpoint.lexically_normal();
    // Marks before the mount opens the files: the open decides whether a file is watched.
    files_->add(m, false);
    // Unlocked: mounting may read blob ranges, whose events the loop needs the table for.
    try {
        std::vector<std::filesystem::path> devices;
        for (const FanotifyBlobFile& blob : m.blobs) devices.push_back(blob.path);
        mountErofsFiles(m.bootstrap, devices, m.mountpoint, [&](int root) {
            // Through the mount's own root: whatever is on its path is not it.
            const int superblock_watch = watchSuperblock(name, fmt::format("/proc/self/fd/{}", root));
            if (attaching) attaching(superblock_watch);
        });
    } catch (...) {
        forget(name);  // a mount never attached is gone with its fd
        throw;
    }
    if (m.keep_marks) return;
    // Complete files need no events while their chunks stay.
    for (const FanotifyBlobFile& blob : m.blobs) {
        if (blob.complete) unmarkComplete(blob.fd);
    }
}

void FanotifyEngine::checkTakeover(const FanotifyMount& m) const {
    if (!responder_) fail("cannot take {} over: no fanotify group adopted", m.mountpoint.native());
}

int FanotifyEngine::reattach(const FanotifyMount& m) {
    checkTakeover(m);
    if (files_->add(m, true)) wakeLoop();
    const std::filesystem::path name = m.mountpoint.lexically_normal();
    if (m.superblock_watch >= 0 && !superblocks_.gone(m.superblock_watch)) {
        std::lock_guard lock(mounts_mutex_);
        watches_[name] = m.superblock_watch;
        return m.superblock_watch;
    }
    return watchSuperblock(name, m.mountpoint.native());
}

std::filesystem::path FanotifyEngine::reattachDetached(FanotifyMount m) {
    checkTakeover(m);
    std::lock_guard lock(mounts_mutex_);
    m.mountpoint = detachedName(m.mountpoint.lexically_normal());
    if (files_->add(m, true)) wakeLoop();
    watches_[m.mountpoint] = m.superblock_watch;
    detached_.insert(m.mountpoint);
    return m.mountpoint;
}

std::filesystem::path FanotifyEngine::detachedName(const std::filesystem::path& mountpoint) {
    return fmt::format("{} (detached {})", mountpoint.native(), ++detached_count_);
}

int FanotifyEngine::watchSuperblock(const std::filesystem::path& name, const std::string& root) {
    const int id = superblocks_.add(root, name.native());
    std::lock_guard lock(mounts_mutex_);
    watches_[name] = id;
    return id;
}

int FanotifyEngine::superblockOf(const std::filesystem::path& name) {
    std::lock_guard lock(mounts_mutex_);
    return watchOfLocked(name);
}

int FanotifyEngine::watchOfLocked(const std::filesystem::path& name) const {
    const auto it = watches_.find(name);
    return it == watches_.end() ? -1 : it->second;
}

bool FanotifyEngine::goneAfterUnmount(int superblock, bool unmounted) {
    // Without a watch, an unmount that worked is taken for the end, as rafsd did before it had
    // one (a copy of the mount in another mount namespace then reads holes as zeros once its files
    // are unmarked: said when the watch failed); one unmounted by someone else may be detached
    // and in use, and is served until the stop.
    return superblock < 0 ? unmounted : superblocks_.gone(superblock);
}

void FanotifyEngine::forget(const std::filesystem::path& name) {
    {
        std::lock_guard lock(mounts_mutex_);
        if (const auto it = watches_.find(name); it != watches_.end()) {
            superblocks_.forget(it->second);
            watches_.erase(it);
        }
        detached_.erase(name);
    }
    files_->remove(name);
}

void FanotifyEngine::leaveUnserved(const std::filesystem::path& mountpoint) {
    if (thread_.joinable()) fail("{} left unserved after the event loop started", mountpoint.native());
    unserved_.push_back(mountpoint);
}

bool FanotifyEngine::unmountUnserved(const std::filesystem::path& mountpoint) {
    if (::umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW) == 0) {
        log::info("{}: unmounted; no rafsd could serve it", mountpoint.native());
        return true;
    }
    if (errno == EINVAL || errno == ENOENT) return true;  // no mount there any more
    log::error("{}: served by no rafsd and cannot be unmounted ({}): once rafsd is gone, its unread bytes read "
               "as zeros; stop what uses it and unmount it", mountpoint.native(), std::strerror(errno));
    return false;
}

void FanotifyEngine::unmarkComplete(int cache_fd) {
    try {
        if (files_->unmarkComplete(cache_fd)) wakeLoop();  // to wait for the mark it keeps for now
    } catch (const std::exception& e) {
        log::warn("{}; its reads keep raising events", e.what());
    }
}

std::optional<std::filesystem::path> FanotifyEngine::umount(const std::filesystem::path& mountpoint) {
    const std::filesystem::path normal = mountpoint.lexically_normal();
    if (!files_ || !files_->has(normal)) fail("{} is not mounted by rafsd", normal.native());
    // EINVAL: no longer a mount point, unmounted by hand (umount(8)): its superblock tells the rest.
    const bool unmounted = ::umount2(normal.c_str(), UMOUNT_NOFOLLOW) == 0;
    if (!unmounted && errno != EINVAL) failErrno(fmt::format("cannot unmount {}", normal.native()));
    if (goneAfterUnmount(superblockOf(normal), unmounted)) {
        forget(normal);
        return std::nullopt;
    }
    // Off its path, which a new mount may take; its files served under another name.
    std::lock_guard lock(mounts_mutex_);
    const std::filesystem::path name = detachedName(normal);
    files_->rename(normal, name);
    watches_[name] = watchOfLocked(normal);
    watches_.erase(normal);
    detached_.insert(name);
    return name;
}

std::vector<std::filesystem::path> FanotifyEngine::releaseDetached() {
    std::vector<std::filesystem::path> gone;
    {
        std::lock_guard lock(mounts_mutex_);
        for (const std::filesystem::path& name : detached_) {
            if (superblocks_.gone(watchOfLocked(name))) gone.push_back(name);
        }
    }
    for (const std::filesystem::path& name : gone) forget(name);
    return gone;
}

std::shared_ptr<CompletionCount> FanotifyEngine::fill(const std::vector<MarkedFiles::MountFile>& files) {
    const auto filled = CompletionCount::make();
    for (const MarkedFiles::MountFile& file : files) {
        const Completion done = filled->add();
        try {
            core_.fill(file.served.image, file.served.blob, done);
        } catch (const std::exception& e) {
            log::error("cannot fill cache file {}: {}", file.path.native(), e.what());
            done(EIO);
        }
    }
    return filled;
}

bool FanotifyEngine::waitBusyGone(std::vector<BusyMount>& busy, std::chrono::steady_clock::time_point deadline,
                                  const std::function<bool()>& done) {
    std::vector<int> superblocks;
    for (const BusyMount& m : busy) superblocks.push_back(m.superblock);
    for (;;) {
        bool gone = true;
        for (BusyMount& m : busy) {
            if (m.attached) {
                // Failed: maybe still mounted there, so still kept for a takeover.
                const Unmount u = unmountIfIdle(m.name);
                if (u == Unmount::Done || u == Unmount::NotMounted) m.attached = false;
                m.unmounted = u == Unmount::Done;
            }
            gone = gone && !m.attached && goneAfterUnmount(m.superblock, m.unmounted);
        }
        const auto now = std::chrono::steady_clock::now();
        if (gone || done() || now >= deadline) return gone;
        superblocks_.waitGone(superblocks, std::min(now + std::chrono::milliseconds(50), deadline));
    }
}

FanotifyEngine::LeftInUse FanotifyEngine::stop(BusyAtStop busy_at_stop, std::chrono::milliseconds grace,
                                               std::chrono::milliseconds fill_time) {
    if (!thread_.joinable()) return {};
    // Every mount unmounted, or, if busy, detached or left on its path, while events are still
    // served: a container still running keeps reading.
    std::vector<BusyMount> busy;
    for (const std::filesystem::path& name : files_->mountpoints()) {
        bool detached = false;
        int superblock = -1;
        {
            std::lock_guard lock(mounts_mutex_);
            detached = detached_.count(name) != 0;
            superblock = watchOfLocked(name);
        }
        const Unmount unmount = detached ? Unmount::NotMounted : unmountIfIdle(name);
        const bool attached = unmount == Unmount::Busy && busy_at_stop == BusyAtStop::LeaveForTakeover;
        if (unmount == Unmount::Busy && !attached) detach(name);
        if (!attached && goneAfterUnmount(superblock, unmount == Unmount::Done)) {
            forget(name);
        } else {
            busy.push_back({name, files_->filesOf(name), superblock, attached, unmount == Unmount::Done});
        }
    }
    // A busy mount reads its cache files without rafsd once the group is closed, its holes as zeros
    // (fanotify_release() in fs/notify/fanotify/fanotify_user.c allows every access then): its files
    // are filled meanwhile, until it is gone (its superblock shut down) or they are complete.
    LeftInUse left;
    if (!busy.empty()) {
        std::vector<MarkedFiles::MountFile> to_fill;
        std::vector<std::string> names;
        for (const BusyMount& m : busy) {
            names.push_back(m.name.native());
            to_fill.insert(to_fill.end(), m.files.begin(), m.files.end());
        }
        log::warn("{} in use: filling {} cache file{} until complete or closed", fmt::join(names, ", "), to_fill.size(),
                  to_fill.size() == 1 ? "" : "s");
        const auto since = std::chrono::steady_clock::now();
        const std::shared_ptr<CompletionCount> filled = fill(to_fill);
        const bool gone = waitBusyGone(busy, since + fill_time, [&] { return filled->waitUntil(std::chrono::steady_clock::now()); });
        const bool complete = !gone && filled->waitUntil(std::chrono::steady_clock::now()) && !filled->failed();
        if (complete) {
            // Reads there need no event any more (also of files that stay marked, in a bounded
            // cache), so none is denied from here on.
            log::info("{}: every cache file is complete; files open there read without rafsd", fmt::join(names, ", "));
            for (const BusyMount& m : busy) {
                if (m.attached) detach(m.name);
                forget(m.name);
            }
            busy.clear();
        } else if (!gone) {
            // Not filled: what is read there now is denied (a retried read too, as the kernel does
            // after a failed read-ahead), while the files open there have a grace to be closed.
            responder_->beginStop();
            responder_->denyAll();
            waitBusyGone(busy, std::chrono::steady_clock::now() + grace, [] { return false; });
            std::vector<std::string> detached_names;
            for (const BusyMount& m : busy) {
                if (m.attached) left.attached.push_back(m.name);
                else if (!goneAfterUnmount(m.superblock, m.unmounted)) detached_names.push_back(m.name.native());
            }
            left.detached = detached_names.size();
            if (!detached_names.empty()) {
                log::error("{}: cache files not complete {} s after the stop: files still open there read unfetched "
                           "data as zeros once the fanotify group is closed", fmt::join(detached_names, ", "),
                           std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - since).count());
            }
        }
    }
    // Then no event may be left unanswered, or it is allowed, unfilled, when the group closes.
    responder_->beginStop();
    responder_->waitIdle(grace);
    responder_->denyAll();
    for (const BusyMount& m : busy) forget(m.name);
    quit_.store(true);
    wakeLoop();
    thread_.join();
    teardown();
    return left;
}

void FanotifyEngine::wakeLoop() {
    // A blob's completion may come from a fetch thread while the engine stops.
    std::lock_guard lock(wake_mutex_);
    if (wake_ < 0) return;  // not started (the loop computes its first wait when it starts), or stopped
    const uint64_t one = 1;
    if (::write(wake_, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
        log::error("cannot wake the fanotify event loop: {}", std::strerror(errno));
    }
}

FanotifyCounters FanotifyEngine::counters() const {
    if (!responder_) return {};
    return {responder_->events.load(), responder_->allowed.load(), responder_->denied.load(),
            responder_->overflows.load()};
}

}  // namespace rafsd
