// Failover: the kernel objects rafsd serves (the /dev/cachefiles fd, the fanotify group) must
// outlive the process serving them. If the last copy of the cachefiles fd closes, every mounted
// fscache image returns EIO for good; if the last copy of a fanotify group closes, the kernel allows
// every pending and future access of its marked files, and their holes read as zeros
// (fs/notify/fanotify/fanotify_user.c, fanotify_release()). So a small single-threaded supervisor
// holds them (KeptFds.h), forks the worker (the process with threads, fetches and mounts) and, when
// the worker dies, forks another one with the same fds, which takes the mounts over.
//
// Under systemd (NOTIFY_SOCKET set) the kept fds are also in the service's fd store, so that a
// restart of the whole service finds them in LISTEN_FDS and fails over the same way.
#pragma once

#include "daemon/process/InPlaceRestart.h"
#include "daemon/process/KeptFds.h"

#include <functional>
#include <optional>
#include <string>

namespace rafsd {

// The worker's body, run in the forked child. `kept`: the supervisor's fds (copies made by fork)
// linked to the supervisor, so the worker can keep more. `restored`: a predecessor (a worker, or a
// whole rafsd) died on these fds, so the kernel may still have its mounts. It calls ready() once it
// serves, then waits for a stop signal (StopSignals.h: blocked in every thread; the supervisor
// forwards them), shuts down and returns the exit status; or, asked to hand over for a reload,
// exits with kWorkerHandedOver without unmounting.
using Worker = std::function<int(KeptFds& kept, bool restored, const std::function<void()>& ready)>;

constexpr int kWorkerHandedOver = 75;

struct SupervisorOptions {
    std::string engine;  // for log lines: "fscache", "fanotify"
    // Kill the worker when the supervisor dies (fscache: a restarted service takes the device over
    // from the fd store, and two daemons must never serve it). Off for fanotify, whose worker goes
    // on serving readers alone; a new rafsd ends it before it takes the group over.
    bool worker_dies_with_supervisor = true;
    // Never release the kept fds while mounts may live on them (a worker served, or they were taken
    // over), unless told to stop: a worker that exits or keeps dying is followed by another, at
    // first at once, then after a delay growing to a minute. For fanotify, whose group's release
    // would let readers see the holes of its marked files as zeros; their reads wait instead.
    // (fscache's mounts fail with EIO when the device closes: there the supervisor gives up once
    // workers that served keep dying, but not while they fail to take mounts over.)
    bool fail_closed = false;
    // Why this kernel cannot let another worker or program take the mounts over (fscache without
    // cachefiles' `restore`), empty if it can. Then the death of a worker that served ends the
    // supervisor, its kept fds dropped, systemd's fd store included (releasing the objects fails
    // the mounts' reads with EIO, where another worker would only loop on a takeover it cannot
    // do), and a reload is refused.
    std::string no_handover;
    // SIGHUP reloads: the worker hands over and this process becomes the program at the same path
    // (InPlaceRestart.h). Without it, SIGHUP stops as SIGTERM does.
    std::optional<InPlaceRestart> reload;
};

// Runs and restarts workers on `kept` until one exits (its status is returned) or one dies before it
// became ready (1), except one that was taking mounts over (`restored`): another follows it, as
// with fail_closed; with fail_closed, once mounts may live on `kept`, until it is told to stop. A
// worker that handed over for a reload is never a reason to let `kept` go: the supervisor execs the
// new program or, if it cannot, starts another worker. Call from a single-threaded process with the
// stop signals blocked. Sends READY=1, RELOADING=1 and STOPPING=1 to systemd itself.
// `release`: after a reload, the holder's pipe (InPlaceRestart::takeRelease), released once a
// worker serves.
int supervise(KeptFds kept, bool restored, const SupervisorOptions& options, const Worker& worker,
              rafs::UniqueFd release = {});

}  // namespace rafsd
