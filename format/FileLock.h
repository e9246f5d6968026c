// flock(LOCK_EX) on an open file or directory: the one way mkrafs and rafsd take such locks. The
// lock belongs to the open file description, so the kernel drops it when its holder dies, and two
// descriptions in one process exclude each other as two processes do (flock(2)).
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace rafs {

enum class LockOutcome {
    Locked,
    TimedOut,     // another holder kept it past the deadline
    Unsupported,  // the file system emulates flock with a lock this fd cannot take (NFS: an
                  // exclusive lock needs a file open for writing)
};

// Takes the lock on `fd`, waiting until `deadline` (nullopt: as long as it takes; a deadline in
// the past: one try). Throws Error naming `what` for any other failure.
LockOutcome lockExclusive(int fd, std::optional<std::chrono::steady_clock::time_point> deadline, std::string_view what);

}  // namespace rafs
