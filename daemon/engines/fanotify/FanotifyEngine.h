// The fanotify engine (Linux 6.14+): EROFS file-backed mounts whose data blobs are sparse cache
// files marked with FAN_PRE_ACCESS. A kernel read of a missing range becomes an event; the core
// makes the range present and we answer FAN_ALLOW, or FAN_DENY_ERRNO(EIO) when it cannot.
//
// The group fails open (fs/notify/fanotify/fanotify_user.c, fanotify_release()): if its last fd
// is closed while a mount is up, holes read as zeros. Hence a mount is forgotten only once its
// superblock is gone (SuperblockWatch), and stop() unmounts, fills the cache files a busy
// (detached) mount still reads, and answers every event before it closes the group; and
// under rafsd's supervisor (daemon/process/Supervisor.h) the group, the journal of pending events
// and the cache files' fds are kept by the supervisor too: a new worker adopts them, takes the
// mounts over and answers what its predecessor left.
//
// The parts: FanotifyGroup (the group and its marks), MarkedFiles (which mount uses which marked
// file), EventResponder (answers, and the journal), ErofsFileMount (mounting and unmounting),
// SuperblockWatch (whether an unmounted mount is gone), and here the event loop and the orphans
// of a dead worker.
//
// Thread-safety: mount, umount, releaseDetached, unmarkComplete and counters may be called from any thread, also
// from inside makePresent or its completion (no engine lock is held then); start and stop must
// not run concurrently with anything else of the engine.
#pragma once

#include "daemon/core/DataPlane.h"
#include "format/UniqueFd.h"
#include "daemon/engines/fanotify/EventBatch.h"
#include "daemon/engines/fanotify/FanotifyMount.h"
#include "daemon/engines/fanotify/MarkedFiles.h"
#include "daemon/engines/fanotify/PendingJournal.h"
#include "daemon/engines/fanotify/SuperblockWatch.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace rafsd {

class CompletionCount;
class EventResponder;

struct FanotifyCounters {
    uint64_t events = 0;     // FAN_PRE_ACCESS events read
    uint64_t allowed = 0;    // answered FAN_ALLOW
    uint64_t denied = 0;     // answered FAN_DENY_ERRNO(EIO)
    uint64_t overflows = 0;  // FAN_Q_OVERFLOW: events were lost
};

class FanotifyEngine {
public:
    // How long stop() lets in-flight ranges finish, and waits for a busy mount whose cache files
    // cannot be filled to be closed.
    static constexpr std::chrono::milliseconds kDefaultGrace{5000};
    // How long stop() may take to fill the cache files of mounts still in use: with a grace,
    // within the unit's TimeoutStopSec (daemon/systemd/rafsd.service.in), after which systemd
    // kills us.
    static constexpr std::chrono::seconds kFillTime{60};

    // busy_poll: after handling events, how long the loop keeps reading the queue before it
    // sleeps; a walking reader's next event usually arrives within that, and then costs no wakeup.
    explicit FanotifyEngine(DataPlane& core, std::chrono::microseconds busy_poll = {});
    ~FanotifyEngine();  // stop()
    FanotifyEngine(const FanotifyEngine&) = delete;
    FanotifyEngine& operator=(const FanotifyEngine&) = delete;

    // Throws Error naming what the kernel lacks for this engine.
    static void checkKernel();
    // A new pre-content group (Linux 6.14+); throws Error naming what the kernel lacks.
    static rafs::UniqueFd createGroup();

    // Serve `group` (kept by a supervisor) with `journal`, the events a previous worker on it read
    // and did not answer. Then reattach() the mounts that worker served, then start().
    void adopt(rafs::UniqueFd group, PendingJournal journal);

    // Creates the group (unless adopted), raises RLIMIT_NOFILE (each pending event pins an fd),
    // answers the adopted journal's orphaned events (waiting for their ranges to be present), and
    // only then starts the event loop thread.
    void start();
    bool running() const { return thread_.joinable(); }

    // Marks every incomplete blob file, then mounts the bootstrap read-only with the blob files
    // as devices. `attaching`, if given, gets the id of the watch on its superblock (SuperblockWatch; -1 if
    // none could be made) before the mount appears at its path; if it throws, nothing is mounted.
    // On failure removes the marks it added and throws.
    void mount(const FanotifyMount& mount, const std::function<void(int superblock_watch)>& attaching = {});

    // Takes over a mount a dead worker made on the adopted group: its files and marks, no mount(2).
    // Before start() for those whose events the dead worker may have left (start() answers them);
    // after it, one left unserved at first (leaveUnserved: its events were denied meanwhile).
    // `m.blobs[i].fd` must be the fd the dead worker wrote through (kept), since a file opened after
    // its mark raises events for our own writes. Returns the id of the watch on its superblock: the
    // dead worker's (`m.superblock_watch`), or a new one through its path.
    int reattach(const FanotifyMount& m);

    // As reattach(), a mount the dead worker served off its path (detached, still in use), watched
    // through `m.superblock_watch` (with -1, served until the stop fills its files). Returns the
    // name its files are served under.
    std::filesystem::path reattachDetached(FanotifyMount m);

    // The inotify instance of the superblock watches, to be kept (KeptFds) so that a worker taking
    // over sees the superblocks its predecessor watched; or a kept one adopted. Before mounting.
    int superblockWatchFd() const { return superblocks_.fd(); }
    void adoptSuperblockWatch(rafs::UniqueFd fd) { superblocks_.adopt(std::move(fd)); }
    // SuperblockWatch::gone.
    bool superblockGone(int superblock_watch) { return superblocks_.gone(superblock_watch); }

    // Before start(): a mount the dead worker served that this worker could not take over. Its
    // files are not known, so an orphaned event whose file is not known may be one of theirs: it
    // is denied, where it would otherwise be allowed once the known files' ranges are present, over
    // what may be a hole of the unknown file.
    void leaveUnserved(const std::filesystem::path& mountpoint);
    // At a stop, such a mount still unserved: its files cannot be filled, and once the group is
    // gone their holes read as zeros. Takes it off its path (true; also if it is no mount there any
    // more); one busy there is left up and logged (false): detached, its open files would read the
    // holes all the same. Off its path, its superblock may live on (an overlay's lower layer, a
    // copy in another mount namespace): superblockGone() says.
    bool unmountUnserved(const std::filesystem::path& mountpoint);

    // The cache file `cache_fd` is open on is complete: drop its mark so its reads cost no event.
    // Shared cache files are complete for every image, so this unmarks the file for all of them.
    // Named by the file, not by an image's blob: an image's index is reused once it is unmounted,
    // and a late call for it would unmark another image's incomplete file, whose holes then read
    // as zeros. Nothing if no mount uses the file (any more); later, if a mount keeps it marked
    // for a while (FanotifyMount::traced_complete_for). A failure is logged: its reads keep
    // raising events, answered from the cache.
    void unmarkComplete(int cache_fd);

    // Unmounts (throws if busy; nothing if it was unmounted by someone else) and, once its
    // superblock is gone, removes the marks of that mount's blobs: returns nothing. A superblock
    // that lives on (SuperblockWatch.h: a lazily detached mount still in use, a copy in another
    // mount namespace) still reads the cache files: its files stay marked and served, under the
    // name returned, until releaseDetached() finds it gone.
    std::optional<std::filesystem::path> umount(const std::filesystem::path& mountpoint);

    // The names umount() returned of mounts whose superblock has gone since: their marks removed.
    std::vector<std::filesystem::path> releaseDetached();

    // What stop() does with a mount still in use (a container running on it).
    enum class BusyAtStop {
        // Detached at once: nothing new opens there, and what is open is served while its cache
        // files are filled. For `rafsd mount`, after which no rafsd takes the mount over.
        Detach,
        // Left on its path while its cache files are filled, detached once they are complete; if
        // they cannot be completed, left mounted and returned, for the mount table: the next rafsd
        // serve takes it over, as after a crash, and what was read as zeros meanwhile reads right
        // again (README, failover). Detached, it would read its holes as zeros for good.
        LeaveForTakeover,
    };

    // Unmounts every mount; a busy one is handled as `busy` says and served on while its cache
    // files are filled, until it is gone or the fill is complete (at most `fill_time`; `grace` for
    // it to go if the fill fails); so is one umount() left served. Then denies new events, lets
    // pending ranges finish for up to `grace`, denies the rest with EIO, and only then closes the
    // group. Never throws; problems are logged.
    struct LeftInUse {
        std::vector<std::filesystem::path> attached;  // on their paths, for a takeover (LeaveForTakeover)
        size_t detached = 0;                          // off their paths: their holes read as zeros for good
    };
    // Returns the mounts still in use whose cache files could not be completed.
    LeftInUse stop(BusyAtStop busy = BusyAtStop::Detach, std::chrono::milliseconds grace = kDefaultGrace,
                   std::chrono::milliseconds fill_time = kFillTime);

    FanotifyCounters counters() const;

private:
    // An event read, with the identity (st_dev, st_ino; 0, 0 if unknown) of its file and its slot in
    // the journal.
    struct ReadEvent {
        FanotifyEvent event;
        uint64_t dev;
        uint64_t ino;
        uint32_t slot;
    };

    // A mount whose superblock may still read its cache files, at a stop.
    struct BusyMount {
        std::filesystem::path name;
        std::vector<MarkedFiles::MountFile> files;
        int superblock = -1;     // its watch (SuperblockWatch); -1 if none
        bool attached = false;   // still on its path (BusyAtStop::LeaveForTakeover)
        bool unmounted = false;  // taken off its path by the stop (umount2 worked)
    };
    // Unmounts the attached ones of `busy` that nothing uses any more, every 50 ms, until every one
    // is gone (goneAfterUnmount), `done()` holds, or `deadline`. Returns whether they are gone.
    bool waitBusyGone(std::vector<BusyMount>& busy, std::chrono::steady_clock::time_point deadline,
                      const std::function<bool()>& done);

    // Throws unless a mount can be taken over: a group adopted, the event loop not started.
    void checkTakeover(const FanotifyMount& m) const;

    int watchSuperblock(const std::filesystem::path& name, const std::string& root);
    // A name for the files of a mount off its path; mounts_mutex_ held.
    std::filesystem::path detachedName(const std::filesystem::path& mountpoint);
    int superblockOf(const std::filesystem::path& name);
    int watchOfLocked(const std::filesystem::path& name) const;  // mounts_mutex_ held; -1 if none
    // Whether a mount's superblock is gone after `unmounted` (umount2 took it off its path).
    bool goneAfterUnmount(int superblock, bool unmounted);
    // Drops a mount from the tables: its marks, its watch.
    void forget(const std::filesystem::path& name);
    void answerOrphans();
    // Starts making every one of `files` complete; counts the files done.
    std::shared_ptr<CompletionCount> fill(const std::vector<MarkedFiles::MountFile>& files);
    void loop(std::promise<void> started);
    // Reads and handles the queued events; false if there were none.
    bool drainEvents();
    void pollEvents();
    void handleEvent(const ReadEvent& event);
    void teardown();

    DataPlane& core_;
    std::chrono::microseconds busy_poll_;
    std::shared_ptr<EventResponder> responder_;  // shared with completions, which may outlive us
    // The group came from adopt() (a supervisor keeps it), not from start(): another worker can
    // take it over.
    bool group_held_elsewhere_ = true;
    std::unique_ptr<MarkedFiles> files_;
    SuperblockWatch superblocks_;
    std::mutex mounts_mutex_;
    std::map<std::filesystem::path, int> watches_;  // mount name (files_) -> its superblock's watch
    std::set<std::filesystem::path> detached_;      // names umount() returned
    uint64_t detached_count_ = 0;
    std::vector<std::filesystem::path> unserved_;  // leaveUnserved(), before start()
    void wakeLoop();  // through wake_, once started
    std::mutex wake_mutex_;  // wake_'s closing against wakeLoop from other threads
    int wake_ = -1;  // eventfd that tells the loop to exit, to read again after a stall, or to wait anew
    std::atomic<bool> quit_{false};
    std::thread thread_;
    std::vector<ReadEvent> batch_;  // loop thread only
};

}  // namespace rafsd
