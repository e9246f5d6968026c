// Failover for the fscache engine (kernel-abi.md A.4, Linux 6.8+). The /dev/cachefiles fd must
// outlive the process serving it: when its last copy closes, the cache dies and every mounted image
// returns EIO for good. So the fd is held by a small single-threaded supervisor, which forks the
// worker (the process with threads, fetches and mounts) and, when the worker dies, forks another
// one on the same fd. The new worker re-registers the images the kernel still has mounted, writes
// `restore`, and serves the resent requests: readers that waited on a miss get their data.
//
// Under systemd (NOTIFY_SOCKET set), the supervisor also hands the bound fd to the service's fd
// store (FDSTORE=1, FDNAME=cachefiles; needs FileDescriptorStoreMax= in the unit), so that a
// restart of the whole service finds it in LISTEN_FDS and fails over the same way. A worker dies
// with its supervisor (PR_SET_PDEATHSIG), so it never serves the device next to a restarted rafsd.
// `rafsd mount` and `rafsd serve` (with fscache as its configured engine) both run this way.
#pragma once

#include "daemon/engines/fscache/FscacheDevice.h"

#include <filesystem>
#include <functional>
#include <string_view>

namespace rafsd {

// The worker's body, run in the forked child. `device` is bound; `restored`: a predecessor (a
// worker, or a whole rafsd) died on it, so the kernel may still have its mounts. It calls ready()
// once it serves, then waits for SIGINT/SIGTERM (blocked in every thread; the supervisor forwards
// them), shuts down and returns the exit status.
using FscacheWorker = std::function<int(FscacheDevice device, bool restored, const std::function<void()>& ready)>;

struct SupervisedDevice {
    FscacheDevice device;
    bool restored = false;  // taken from systemd's fd store: a previous rafsd died on it
};

// The device to supervise: systemd's stored one, else FscacheDevice::open (throws Error saying what
// is missing), then offered to the fd store.
SupervisedDevice acquireFscacheDevice(const std::filesystem::path& cache_dir, std::string_view tag);

// Runs and restarts workers on `supervised` until one exits (its status is returned) or one dies
// before it became ready (1). Call from a single-threaded process with SIGINT and SIGTERM blocked.
// Sends READY=1 and STOPPING=1 to systemd itself.
int superviseFscache(SupervisedDevice supervised, const FscacheWorker& worker);

}  // namespace rafsd
