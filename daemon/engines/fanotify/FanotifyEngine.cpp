#include "daemon/engines/fanotify/FanotifyEngine.h"

#include "daemon/engines/fanotify/EventBatch.h"

#include "builder/format/Error.h"
#include "daemon/core/Log.h"
#include "daemon/core/UniqueFd.h"
#include "kernel-abi/fanotify.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

namespace rafsd {

namespace {

using rafs::fail;
using rafs::failErrno;

constexpr unsigned kRingEntries = 4;
constexpr uint64_t kGroupTag = 1;
constexpr uint64_t kWakeTag = 2;
constexpr uint64_t kBlock = 4096;
// What to fetch when the kernel reports no length: erofs-utils fetches 4 MiB too.
constexpr uint64_t kUnknownCountWindow = 4 << 20;

int initGroup(unsigned flags) {
    // Event fds are only fstat'ed and closed: the core writes through its own pre-mark fd.
    const int fd = ::fanotify_init(flags, O_RDONLY | O_LARGEFILE);
    if (fd >= 0) return fd;
    if (errno == EINVAL) {
        fail("kernel lacks fanotify pre-content events (Linux 6.14+ with "
             "CONFIG_FANOTIFY_ACCESS_PERMISSIONS)");
    }
    if (errno == EPERM) fail("fanotify pre-content events need CAP_SYS_ADMIN");
    if (errno == ENOSYS) fail("kernel lacks fanotify (CONFIG_FANOTIFY)");
    failErrno("fanotify_init");
}

void raiseFdLimit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) failErrno("getrlimit(RLIMIT_NOFILE)");
    if (limit.rlim_cur == limit.rlim_max) return;
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) failErrno("setrlimit(RLIMIT_NOFILE)");
}

void armPoll(io_uring& ring, int fd, uint64_t tag) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) fail("io_uring submission queue full");
    io_uring_prep_poll_multishot(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag);
}

void submit(io_uring& ring) {
    if (const int rc = io_uring_submit(&ring); rc < 0) failErrno("io_uring_submit", -rc);
}

// Throws for a failed fs-context call, with the messages the kernel attached to the context.
[[noreturn]] void failMount(int fsfd, const std::string& what) {
    const int err = errno;
    std::string messages;
    char line[512];
    for (;;) {
        // ENODATA once the log is empty.
        const ssize_t n = ::read(fsfd, line, sizeof line);
        if (n <= 0) break;
        messages += messages.empty() ? " (kernel: " : "; ";
        messages.append(line, static_cast<size_t>(n));
    }
    if (!messages.empty()) messages += ')';
    fail("{}: {}{}", what, std::strerror(err), messages);
}

// The new mount API rather than mount(2): its option string is cut at one page, which limits the
// number of device= paths.
void mountErofs(const FanotifyMount& m) {
    const std::string what = fmt::format("cannot mount {} on {}", m.bootstrap.native(), m.mountpoint.native());
    UniqueFd fs(::fsopen("erofs", FSOPEN_CLOEXEC));
    if (fs.get() < 0) {
        if (errno == ENODEV) fail("{}: kernel has no EROFS (CONFIG_EROFS_FS)", what);
        failErrno(what);
    }
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "source", m.bootstrap.c_str(), 0) != 0) {
        failMount(fs.get(), what);
    }
    for (const BlobFile& blob : m.blobs) {
        if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "device", blob.path.c_str(), 0) != 0) {
            failMount(fs.get(), fmt::format("{}: device {}", what, blob.path.native()));
        }
    }
    if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
        if (errno == ENOTBLK) {
            fail("{}: kernel lacks EROFS file-backed mounts (CONFIG_EROFS_FS_BACKED_BY_FILE)", what);
        }
        failMount(fs.get(), what);
    }
    UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY));
    if (mnt.get() < 0) failMount(fs.get(), what);
    if (::move_mount(mnt.get(), "", AT_FDCWD, m.mountpoint.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
        failErrno(what);
    }
}

// The block-aligned range to make present for a read of [offset, offset + count) of a file of
// `size` bytes (offset < size); the kernel's count is the read's, not rounded.
std::pair<uint64_t, uint64_t> fetchRange(uint64_t offset, uint64_t count, uint64_t size) {
    const uint64_t begin = offset & ~(kBlock - 1);
    const uint64_t want = count == 0 ? kUnknownCountWindow : count;
    const uint64_t end = want >= size - offset ? size : std::min(size, (offset + want + kBlock - 1) & ~(kBlock - 1));
    return {begin, end};
}

}  // namespace

// Answers events from any thread, and keeps the journal of what is pending (PendingJournal.h).
// Completions hold it by shared_ptr, so one arriving after the engine is gone finds its event
// already answered and does nothing.
struct FanotifyEngine::Responder {
    std::mutex mutex;
    std::condition_variable idle;  // pending became empty
    int group = -1;
    int wake = -1;  // the loop's eventfd: written when slots free up after the loop ran short
    std::optional<PendingJournal> journal;
    bool stopping = false;
    bool starved = false;  // the loop stopped reading for want of journal slots
    uint64_t nextSeq = 0;
    struct Pending {
        uint64_t seq;
        uint32_t slot;
    };
    // Event fd -> the event it belongs to. An fd stays open until its event is answered, so its
    // number cannot be reused by another pending event; the sequence number tells a late
    // completion from one for a newer event that got the same fd number.
    std::unordered_map<int, Pending> pending;
    std::atomic<uint64_t> events{0};
    std::atomic<uint64_t> allowed{0};
    std::atomic<uint64_t> denied{0};
    std::atomic<uint64_t> overflows{0};

    Responder() = default;
    Responder(const Responder&) = delete;
    Responder& operator=(const Responder&) = delete;
    ~Responder() {
        if (group >= 0) closeOrWarn(group, "fanotify group");
    }

    bool hasRoomForBatch() {
        std::lock_guard lock(mutex);
        starved = journal->freeSlots() < PendingJournal::kMaxEventsPerBatch;
        return !starved;
    }

    uint32_t record(const PendingJournal::Entry& entry) {
        std::lock_guard lock(mutex);
        return journal->record(entry);
    }

    // Registers an event handed to the core; nullopt once stopping (the caller denies it).
    std::optional<uint64_t> admit(int fd, uint32_t slot) {
        std::lock_guard lock(mutex);
        if (stopping) return std::nullopt;
        const uint64_t seq = nextSeq++;
        pending.emplace(fd, Pending{seq, slot});
        return seq;
    }

    void complete(int fd, uint64_t seq, int error) {
        std::lock_guard lock(mutex);
        const auto it = pending.find(fd);
        if (it == pending.end() || it->second.seq != seq) return;
        const uint32_t slot = it->second.slot;
        pending.erase(it);
        respondLocked(fd, slot, error == 0);
        if (pending.empty()) idle.notify_all();
    }

    // For events never admitted.
    void respond(int fd, uint32_t slot, bool allow) {
        std::lock_guard lock(mutex);
        respondLocked(fd, slot, allow);
    }

    // For an event a dead worker read: its fd number was that worker's, so there is nothing to close.
    void answerOrphan(int fd, bool allow) {
        std::lock_guard lock(mutex);
        answer(fd, allow);
    }

    void beginStop() {
        std::lock_guard lock(mutex);
        stopping = true;
    }

    void waitIdle(std::chrono::milliseconds grace) {
        std::unique_lock lock(mutex);
        idle.wait_for(lock, grace, [this] { return pending.empty(); });
    }

    void denyAll() {
        std::lock_guard lock(mutex);
        if (!pending.empty()) log::warn("denying {} pending fanotify events with EIO", pending.size());
        for (const auto& [fd, p] : pending) respondLocked(fd, p.slot, false);
        pending.clear();
    }

    void closeGroup() {
        std::lock_guard lock(mutex);
        closeOrWarn(group, "fanotify group");
        group = -1;
    }

private:
    // One 8-byte write is atomic, and the lock orders it against closeGroup(). Counted first, so
    // a reader woken by the answer sees it counted.
    void answer(int fd, bool allow) {
        (allow ? allowed : denied).fetch_add(1, std::memory_order_relaxed);
        const fanotify::Response response{fd, allow ? fanotify::kAllow : fanotify::denyWithErrno(EIO)};
        const ssize_t n = ::write(group, &response, sizeof response);
        if (n < 0) {
            log::error("cannot answer fanotify event: {}", std::strerror(errno));
        } else if (static_cast<size_t>(n) != sizeof response) {
            log::error("cannot answer fanotify event: short write of {} bytes", n);
        }
    }

    // The slot is cleared before the fd is closed: once closed, its number may go to a new event.
    void respondLocked(int fd, uint32_t slot, bool allow) {
        answer(fd, allow);
        journal->clear(slot);
        closeOrWarn(fd, "fanotify event fd");
        if (starved && journal->freeSlots() >= PendingJournal::kMaxEventsPerBatch) {
            starved = false;
            const uint64_t one = 1;
            if (::write(wake, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
                log::error("cannot wake the fanotify event loop: {}", std::strerror(errno));
            }
        }
    }
};

FanotifyEngine::FanotifyEngine(DataPlane& core, std::chrono::microseconds busy_poll)
    : core_(core), busy_poll_(busy_poll) {}

FanotifyEngine::~FanotifyEngine() { stop(); }

void FanotifyEngine::checkKernel() {
    closeOrWarn(initGroup(fanotify::kClassPreContent | fanotify::kCloexec), "fanotify group");
    std::ifstream in("/proc/filesystems");
    if (!in) fail("cannot read /proc/filesystems");
    std::string line;
    while (std::getline(in, line)) {
        if (line.ends_with("\terofs")) return;
    }
    fail("kernel has no EROFS: /proc/filesystems lacks erofs (CONFIG_EROFS_FS, or load the erofs module)");
}

UniqueFd FanotifyEngine::createGroup() {
    // An unlimited queue: a permission event that does not fit is dropped and its read goes on
    // unfilled. Unlimited marks: one mark per incomplete blob of every mounted image.
    return UniqueFd(initGroup(fanotify::kClassPreContent | fanotify::kCloexec | fanotify::kNonblock |
                              fanotify::kUnlimitedQueue | fanotify::kUnlimitedMarks));
}

void FanotifyEngine::adopt(UniqueFd group, PendingJournal journal) {
    if (responder_) fail("fanotify engine already has a group");
    auto responder = std::make_shared<Responder>();
    responder->group = group.release();
    responder->journal.emplace(std::move(journal));
    responder_ = std::move(responder);
}

void FanotifyEngine::start() {
    if (thread_.joinable()) fail("fanotify engine already started");
    raiseFdLimit();
    if (!responder_) adopt(createGroup(), PendingJournal::create());
    UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (wake.get() < 0) failErrno("eventfd");
    wake_ = wake.release();
    responder_->wake = wake_;
    try {
        answerOrphans();
        responder_->journal->setOwner(ProcessIdentity::self());
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
// fails or no file is served.
void FanotifyEngine::answerOrphans() {
    Responder& responder = *responder_;
    const std::vector<PendingJournal::Entry> orphans = responder.journal->orphans();
    if (!orphans.empty()) {
        log::warn("fanotify: answering {} events a previous worker read but did not answer", orphans.size());
        struct Target {
            uint32_t image, blob;
            uint64_t begin, end;
        };
        struct Waiting {
            std::mutex mutex;
            std::condition_variable done;
            size_t left = 0;
        };
        auto waiting = std::make_shared<Waiting>();
        for (const PendingJournal::Entry& orphan : orphans) {
            std::vector<Target> targets;
            {
                std::lock_guard lock(mutex_);
                for (const auto& [key, file] : files_) {
                    const bool known = orphan.dev != 0 || orphan.ino != 0;
                    if (known && key != FileKey{orphan.dev, orphan.ino}) continue;
                    if (orphan.offset >= file.size) continue;
                    const auto [begin, end] = fetchRange(orphan.offset, orphan.count, file.size);
                    targets.push_back({file.users.front().first, file.users.front().second, begin, end});
                }
            }
            log::info("fanotify: orphaned event fd {} for [{}, +{}), {} files to fill", orphan.fd, orphan.offset,
                      orphan.count, targets.size());
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
            {
                std::lock_guard lock(waiting->mutex);
                ++waiting->left;
            }
            for (const Target& t : targets) {
                auto finish = [answer, waiting, shared = responder_](int error) {
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
                    std::lock_guard lock(waiting->mutex);
                    if (--waiting->left == 0) waiting->done.notify_all();
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
        std::unique_lock lock(waiting->mutex);
        waiting->done.wait(lock, [&] { return waiting->left == 0; });
        log::info("fanotify: every orphaned event answered");
    }
    std::lock_guard lock(responder.mutex);
    responder.journal->reset();
}

void FanotifyEngine::teardown() {
    closeOrWarn(wake_, "eventfd");
    wake_ = -1;
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
        armPoll(ring, responder_->group, kGroupTag);
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
            const int rc = io_uring_wait_cqe(&ring, &cqe);
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
                armPoll(ring, tag == kGroupTag ? responder_->group : wake_, tag);
                submit(ring);
            }
        }
        // Events queued since the last wakeup; the engine is stopping, so they are denied.
        drainEvents();
    } catch (const std::exception& e) {
        log::error("fanotify event loop failed, events are no longer answered: {}", e.what());
    }
    io_uring_queue_exit(&ring);
}

// Handles the queued events, then keeps reading until none came for busy_poll_: the poll CQEs the
// events raise meanwhile find an empty queue later, which costs one read each.
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
        }
    }
}

bool FanotifyEngine::drainEvents() {
    Responder& responder = *responder_;
    PendingJournal& journal = *responder.journal;
    bool any = false;
    for (;;) {
        // A full batch must fit in the journal; the loop is woken when enough slots are free.
        if (!responder.hasRoomForBatch()) return any;
        const std::span<std::byte> area = journal.beginBatch();
        const ssize_t n = ::read(responder.group, area.data(), area.size());
        if (n <= 0) {
            journal.endBatch(0);
            if (n == 0) return any;
            if (errno == EAGAIN) return any;
            if (errno == EINTR) continue;
            if (errno == EMFILE || errno == ENFILE) {
                // The kernel could not open the event's fd and denied that event itself.
                log::error("fanotify event denied: out of file descriptors");
                continue;
            }
            failErrno("cannot read fanotify events");
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
    Responder& responder = *responder_;
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
    uint32_t image = 0;
    uint32_t blob = 0;
    uint64_t size = 0;
    {
        std::lock_guard lock(mutex_);
        const auto it = files_.find({read.dev, read.ino});
        if (it == files_.end()) {
            // Files stay in the table until unmounted, complete ones too, so a file not there is one
            // this worker does not serve (a mount it could not take over): never allow over holes.
            log::error("fanotify event for a file not served (dev {} inode {}), denying", read.dev, read.ino);
            responder.respond(fd, read.slot, false);
            return;
        }
        // Any user will do: they share the cache file.
        std::tie(image, blob) = it->second.users.front();
        size = it->second.size;
    }
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

void FanotifyEngine::mount(const FanotifyMount& m) {
    if (!thread_.joinable()) fail("cannot mount {}: fanotify engine not running", m.mountpoint.native());
    const MountEntry entry = addMount(m, false);
    // Unlocked: mounting may read blob ranges, whose events the loop needs the table for.
    try {
        mountErofs(m);
    } catch (...) {
        std::lock_guard lock(mutex_);
        release(m.image, entry.files);
        std::erase_if(mounts_, [&](const MountEntry& e) { return e.mountpoint == entry.mountpoint; });
        throw;
    }
}

void FanotifyEngine::reattach(const FanotifyMount& m) {
    if (thread_.joinable()) fail("cannot take {} over: the event loop already runs", m.mountpoint.native());
    if (!responder_) fail("cannot take {} over: no fanotify group adopted", m.mountpoint.native());
    addMount(m, true);
}

FanotifyEngine::MountEntry FanotifyEngine::addMount(const FanotifyMount& m, bool reattach) {
    MountEntry entry{m.image, m.mountpoint.lexically_normal(), {}};
    std::lock_guard lock(mutex_);
    for (const MountEntry& other : mounts_) {
        if (other.mountpoint == entry.mountpoint) fail("{} is already mounted", entry.mountpoint.native());
    }
    // Marks before the mount opens the files: the open decides whether a file is watched. A mount
    // taken over keeps the marks its group has; adding one again changes nothing, and a complete
    // file's mark, which a dead worker may not have removed yet, is removed.
    try {
        for (const BlobFile& blob : m.blobs) {
            if (!blob.complete) {
                acquire(blob, m.image, entry.files);
            } else if (reattach &&
                       ::fanotify_mark(responder_->group, fanotify::kMarkRemove, fanotify::kPreAccess, blob.fd, nullptr) != 0 &&
                       errno != ENOENT) {
                failErrno(fmt::format("cannot unmark complete cache file {}", blob.path.native()));
            }
        }
    } catch (...) {
        release(m.image, entry.files);
        throw;
    }
    mounts_.push_back(entry);
    return entry;
}

void FanotifyEngine::acquire(const BlobFile& blob, uint32_t image, std::vector<std::pair<uint32_t, FileKey>>& files) {
    struct stat st {};
    if (::fstat(blob.fd, &st) != 0) failErrno(fmt::format("cannot stat cache file {}", blob.path.native()));
    if (!S_ISREG(st.st_mode)) fail("cache file {} is not a regular file", blob.path.native());
    const FileKey key{st.st_dev, st.st_ino};
    const auto mark = [&](int fd) {
        if (::fanotify_mark(responder_->group, fanotify::kMarkAdd, fanotify::kPreAccess, fd, nullptr) == 0) return;
        // EOPNOTSUPP on 6.18 (tmpfs); the 6.14 patches returned EINVAL.
        if (errno == EOPNOTSUPP || errno == EINVAL) {
            fail("cannot watch cache file {}: its file system has no fanotify pre-content events "
                 "(ext4, xfs or btrfs needed)",
                 blob.path.native());
        }
        failErrno(fmt::format("cannot mark cache file {}", blob.path.native()));
    };
    const auto it = files_.find(key);
    if (it == files_.end()) {
        UniqueFd fd = UniqueFd::duplicate(blob.fd, blob.path.native());
        mark(fd.get());
        files_.emplace(key, MarkedFile{blob.path, fd.release(), blob.size, true, {{image, blob.blob}}});
    } else {
        if (!it->second.marked) {
            mark(it->second.fd);
            it->second.marked = true;
        }
        it->second.users.emplace_back(image, blob.blob);
    }
    files.emplace_back(blob.blob, key);
}

// Drops one mount's use of its files; a file nobody uses any more loses its mark. Logs rather than
// throws: it runs on rollback and after an unmount.
void FanotifyEngine::release(uint32_t image, const std::vector<std::pair<uint32_t, FileKey>>& files) {
    for (const auto& [blob, key] : files) {
        const auto it = files_.find(key);
        MarkedFile& file = it->second;
        file.users.erase(std::find(file.users.begin(), file.users.end(), std::pair{image, blob}));
        if (!file.users.empty()) continue;
        if (file.marked &&
            ::fanotify_mark(responder_->group, fanotify::kMarkRemove, fanotify::kPreAccess, file.fd, nullptr) != 0) {
            log::warn("cannot unmark cache file {}: {}", file.path.native(), std::strerror(errno));
        }
        closeOrWarn(file.fd, file.path.native());
        files_.erase(it);
    }
}

void FanotifyEngine::unmarkComplete(uint32_t image, uint32_t blob) {
    std::lock_guard lock(mutex_);
    for (const MountEntry& entry : mounts_) {
        if (entry.image != image) continue;
        for (const auto& [b, key] : entry.files) {
            if (b != blob) continue;
            MarkedFile& file = files_.at(key);
            if (!file.marked) return;
            if (::fanotify_mark(responder_->group, fanotify::kMarkRemove, fanotify::kPreAccess, file.fd, nullptr) != 0) {
                failErrno(fmt::format("cannot unmark cache file {}", file.path.native()));
            }
            file.marked = false;
            return;
        }
    }
}

void FanotifyEngine::umount(const std::filesystem::path& mountpoint) {
    const std::filesystem::path normal = mountpoint.lexically_normal();
    const auto find = [&] {
        return std::find_if(mounts_.begin(), mounts_.end(), [&](const MountEntry& e) { return e.mountpoint == normal; });
    };
    {
        std::lock_guard lock(mutex_);
        if (find() == mounts_.end()) fail("{} is not mounted by rafsd", normal.native());
    }
    if (::umount2(normal.c_str(), UMOUNT_NOFOLLOW) != 0) failErrno(fmt::format("cannot unmount {}", normal.native()));
    std::lock_guard lock(mutex_);
    const auto it = find();
    release(it->image, it->files);
    mounts_.erase(it);
}

void FanotifyEngine::stop(std::chrono::milliseconds grace) {
    if (!thread_.joinable()) return;
    // The loop keeps reading, denying every new event, until the mounts are gone: an event left
    // unread would be allowed, unfilled, when the group closes.
    responder_->beginStop();
    responder_->waitIdle(grace);
    responder_->denyAll();
    std::vector<MountEntry> mounts;
    {
        std::lock_guard lock(mutex_);
        mounts.swap(mounts_);
    }
    for (const MountEntry& entry : mounts) {
        unmountForStop(entry, grace);
        std::lock_guard lock(mutex_);
        release(entry.image, entry.files);
    }
    quit_.store(true);
    const uint64_t one = 1;
    if (::write(wake_, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
        log::error("cannot wake the fanotify event loop: {}", std::strerror(errno));
    }
    thread_.join();
    teardown();
}

// A busy mount (readers still hold files open, now getting EIO) is detached at once, so nothing new
// is opened there, and then kept served, denying every event, until its superblock is gone: the
// group must not close while a file of the mount is open, or its holes would read as zeros. The
// superblock is gone when the kernel has closed the mount's blob files (inotify IN_CLOSE_NOWRITE
// on each incomplete one; complete ones have no holes). Gives up after `grace`.
void FanotifyEngine::unmountForStop(const MountEntry& entry, std::chrono::milliseconds grace) {
    const std::filesystem::path& mountpoint = entry.mountpoint;
    if (::umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW) == 0) return;
    if (errno != EBUSY) {
        log::error("cannot unmount {}: {}", mountpoint.native(), std::strerror(errno));
        return;
    }
    UniqueFd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (watch.get() < 0) log::warn("inotify_init1: {}", std::strerror(errno));
    std::set<int> open_files;  // watch descriptors of blob files the kernel still has open
    if (watch.get() >= 0) {
        std::lock_guard lock(mutex_);
        for (const auto& [blob, key] : entry.files) {
            const auto it = files_.find(key);
            if (it == files_.end()) continue;
            // Through our fd: the path may have been replaced meanwhile.
            const std::string path = fmt::format("/proc/self/fd/{}", it->second.fd);
            const int wd = ::inotify_add_watch(watch.get(), path.c_str(), IN_CLOSE_NOWRITE);
            if (wd < 0) {
                log::warn("cannot watch cache file {}: {}", it->second.path.native(), std::strerror(errno));
            } else {
                open_files.insert(wd);
            }
        }
    }
    if (::umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW | MNT_DETACH) != 0) {
        log::error("cannot detach {}: {}", mountpoint.native(), std::strerror(errno));
        return;
    }
    log::info("{} busy: detached; denying reads of files still open there until they are closed",
              mountpoint.native());
    const auto deadline = std::chrono::steady_clock::now() + grace;
    alignas(inotify_event) char buffer[4096];
    while (!open_files.empty() && watch.get() >= 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{watch.get(), POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR) {
            log::warn("poll on inotify: {}", std::strerror(errno));
            break;
        }
        for (;;) {
            const ssize_t n = ::read(watch.get(), buffer, sizeof buffer);
            if (n <= 0) break;
            for (ssize_t pos = 0; pos + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
                inotify_event event{};
                std::memcpy(&event, buffer + pos, sizeof event);
                if ((event.mask & (IN_CLOSE_NOWRITE | IN_IGNORED)) != 0) open_files.erase(event.wd);
                pos += static_cast<ssize_t>(sizeof(inotify_event) + event.len);
            }
        }
    }
    if (!open_files.empty()) {
        log::error("{} still in use {} ms after it was detached: files still open there read unfetched data "
                   "as zeros once the fanotify group is closed",
                   mountpoint.native(), grace.count());
    }
}

FanotifyCounters FanotifyEngine::counters() const {
    if (!responder_) return {};
    return {responder_->events.load(), responder_->allowed.load(), responder_->denied.load(),
            responder_->overflows.load()};
}

}  // namespace rafsd
