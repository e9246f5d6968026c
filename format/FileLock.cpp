#include "format/FileLock.h"

#include "format/Error.h"

#include <fmt/format.h>
#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <thread>

namespace rafs {

LockOutcome lockExclusive(int fd, std::optional<std::chrono::steady_clock::time_point> deadline, std::string_view what) {
    for (;;) {
        // Blocking only without a deadline: a blocked flock cannot be given a time limit.
        if (::flock(fd, deadline ? LOCK_EX | LOCK_NB : LOCK_EX) == 0) return LockOutcome::Locked;
        const int err = errno;
        if (err == EINTR) continue;
        // EBADF for an fd that is open: NFS emulates flock with a POSIX lock, which an exclusive
        // lock takes only on a file open for writing. ENOLCK: a server without a lock manager.
        if ((err == EBADF && ::fcntl(fd, F_GETFL) != -1) || err == ENOLCK || err == EOPNOTSUPP) {
            return LockOutcome::Unsupported;
        }
        if (err != EWOULDBLOCK || !deadline) failErrno(fmt::format("{}: flock", what), err);
        if (std::chrono::steady_clock::now() >= *deadline) return LockOutcome::TimedOut;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

}  // namespace rafs
