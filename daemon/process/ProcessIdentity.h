// A process named so that a reused pid is not mistaken for it: its pid and its start time (field
// 22 of /proc/PID/stat, in clock ticks since boot). Used to find, and end, a worker of an earlier
// rafsd that may still read a fanotify group a new rafsd takes over.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>

namespace rafsd {

struct ProcessIdentity {
    pid_t pid = 0;
    uint64_t start_time = 0;

    static ProcessIdentity self();
    // The start time of `pid`, or nullopt if there is no such process.
    static std::optional<uint64_t> startTimeOf(pid_t pid);
    bool alive() const;
};

// Sends SIGKILL to `process` if it is still alive, and waits up to `timeout` for it to be gone.
// Throws rafs::Error if it is still there then.
void endProcess(const ProcessIdentity& process, std::chrono::milliseconds timeout);

}  // namespace rafsd
