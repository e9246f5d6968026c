#include "format/ChildProcess.h"

#include "format/Error.h"
#include "format/UniqueFd.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

extern char** environ;

namespace rafs {

namespace {

// write(2) to a child's stdin that never raises SIGPIPE: a child that exits without reading it
// must not end the process (rafsd, mkrafs). SIGPIPE is blocked on this thread for the write, and
// one the write raised is taken off the thread's pending signals before it is unblocked.
ssize_t writeWithoutSigpipe(int fd, std::string_view data) {
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    if (const int rc = ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old); rc != 0) failErrno("pthread_sigmask", rc);
    const ssize_t wrote = ::write(fd, data.data(), data.size());
    const int write_errno = errno;
    if (wrote < 0 && write_errno == EPIPE) {
        const timespec now{0, 0};
        while (::sigtimedwait(&pipe_only, nullptr, &now) < 0 && errno == EINTR) {
        }
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = write_errno;
    return wrote;
}

pid_t spawn(const ChildRun& run, int in, int out) {
    posix_spawn_file_actions_t actions;
    if (const int rc = posix_spawn_file_actions_init(&actions); rc != 0) failErrno(run.argv[0], rc);
    posix_spawnattr_t attr;
    if (const int rc = posix_spawnattr_init(&attr); rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        failErrno(run.argv[0], rc);
    }
    int rc = posix_spawn_file_actions_adddup2(&actions, in, 0);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, out, 1);
    if (rc == 0) {
        rc = run.stderr_to_output ? posix_spawn_file_actions_adddup2(&actions, out, 2)
                                  : posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    }
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    // rafsd blocks its stop signals in every thread (StopSignals.h); the child would inherit that.
    sigset_t none;
    sigemptyset(&none);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
    // A process group of its own, so that a deadline's kill takes what it started too (a
    // credential helper is often a script whose `sleep` or curl would outlive it).
    if (rc == 0) rc = posix_spawnattr_setpgroup(&attr, 0);
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    std::vector<std::string> args = run.argv;
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (rc == 0) rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) failErrno(run.argv[0], rc);
    return pid;
}

}  // namespace

bool ChildResult::exitedWith(int code) const { return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == code; }

std::string ChildResult::firstLine() const { return output.substr(0, std::min(output.find('\n'), size_t{200})); }

std::string ChildResult::lastLine() const {
    const size_t end = output.find_last_not_of("\r\n");
    if (end == std::string::npos) return "";
    const size_t begin = output.rfind('\n', end);
    const size_t from = begin == std::string::npos ? 0 : begin + 1;
    return output.substr(from, std::min(end + 1 - from, size_t{300}));
}

ChildResult runChild(const ChildRun& run) {
    if (run.argv.empty()) fail("runChild: no program");
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) failErrno("pipe");
    UniqueFd in_read(in[0]), in_write(in[1]);
    if (::pipe2(out, O_CLOEXEC) != 0) failErrno("pipe");
    UniqueFd out_read(out[0]), out_write(out[1]);
    const pid_t pid = spawn(run, in[0], out[1]);
    in_read = UniqueFd();
    out_write = UniqueFd();
    ChildResult result;
    // A few bytes: they fit the pipe, so this does not block.
    if (!run.input.empty()) {
        const ssize_t wrote = writeWithoutSigpipe(in_write.get(), run.input);
        result.input_written = wrote == static_cast<ssize_t>(run.input.size());
    }
    in_write = UniqueFd();
    const auto deadline = std::chrono::steady_clock::now() + run.timeout;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            result.timed_out = true;
            break;
        }
        pollfd p{out_read.get(), POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready <= 0) continue;  // EINTR, or the deadline: checked above
        char buffer[4096];
        const ssize_t n = ::read(out_read.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (result.output.size() < run.max_output) {
            result.output.append(buffer, std::min(static_cast<size_t>(n), run.max_output - result.output.size()));
        }
    }
    // Its output closed is not its end: a child that closes stdout and lingers is still bound by
    // the deadline.
    while (!result.timed_out) {
        const pid_t ended = ::waitpid(pid, &result.status, WNOHANG);
        if (ended == pid || (ended < 0 && errno != EINTR)) return result;
        if (std::chrono::steady_clock::now() >= deadline) {
            result.timed_out = true;
            break;
        }
        ::usleep(2000);
    }
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, &result.status, 0) < 0 && errno == EINTR) {
    }
    return result;
}

}  // namespace rafs
