#include "format/FileLock.h"

#include "format/Error.h"

#include <fmt/format.h>
#include <sys/file.h>

#include <cerrno>
#include <thread>

namespace rafs {

LockOutcome lockExclusive(int fd, std::optional<std::chrono::steady_clock::time_point> deadline, std::string_view what) {
    for (;;) {
        // Blocking only without a deadline: a blocked flock cannot be given a time limit.
        if (::flock(fd, deadline ? LOCK_EX | LOCK_NB : LOCK_EX) == 0) return LockOutcome::Locked;
        if (errno == EINTR) continue;
        if (errno == EBADF || errno == ENOLCK || errno == EOPNOTSUPP) return LockOutcome::Unsupported;
        if (errno != EWOULDBLOCK) failErrno(fmt::format("{}: flock", what));
        if (std::chrono::steady_clock::now() >= *deadline) return LockOutcome::TimedOut;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

}  // namespace rafs
