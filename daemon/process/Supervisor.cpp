#include "daemon/process/Supervisor.h"

#include "format/Error.h"
#include "daemon/core/Log.h"
#include "format/UniqueFd.h"
#include "daemon/core/CloseOrWarn.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iostream>

namespace rafsd {

namespace {

using rafs::failErrno;

// A worker that keeps dying right after it starts serving would otherwise be restarted forever.
constexpr size_t kMaxRestarts = 10;
constexpr auto kRestartWindow = std::chrono::seconds(60);
constexpr auto kMaxHoldDelay = std::chrono::seconds(60);

// Waits `delay` for SIGINT or SIGTERM on `signal_fd` (SIGCHLD ignored: no worker runs); true if one
// came. Tells systemd it is stopping.
bool waitForStop(int signal_fd, std::chrono::seconds delay) {
    const auto until = std::chrono::steady_clock::now() + delay;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{signal_fd, POLLIN, 0};
        const int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n < 0) {
            if (errno == EINTR) continue;
            failErrno("poll");
        }
        if (n == 0) return false;
        signalfd_siginfo info{};
        if (::read(signal_fd, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) failErrno("read signalfd");
        if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
            sd_notify(0, "STOPPING=1");
            return true;
        }
    }
}

// Forks a worker; returns its pid and, in `ready_fd`, the read end of the pipe it signals
// readiness on. Never returns in the child, which gets `kept` linked to the supervisor by `link`.
pid_t forkWorker(KeptFds& kept, KeptFds::Link& link, int signal_fd, bool restored,
                 const SupervisorOptions& options, const Worker& worker, int& ready_fd) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) failErrno("pipe2");
    const pid_t supervisor = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) failErrno("fork");
    if (pid > 0) {
        closeOrWarn(pipe_fds[1], "worker ready pipe");
        link.worker = rafs::UniqueFd();
        ready_fd = pipe_fds[0];
        return pid;
    }
    int status = 1;
    try {
        if (options.worker_dies_with_supervisor) {
            if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) failErrno("prctl PR_SET_PDEATHSIG");
            if (::getppid() != supervisor) std::exit(1);  // it died before prctl
        }
        closeOrWarn(pipe_fds[0], "worker ready pipe");
        closeOrWarn(signal_fd, "signalfd");
        link.supervisor = rafs::UniqueFd();
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        if (::sigprocmask(SIG_UNBLOCK, &chld, nullptr) != 0) failErrno("sigprocmask");
        kept.attachLink(link.worker.get());
        status = worker(kept, restored, [fd = pipe_fds[1]] {
            const char byte = 1;
            if (::write(fd, &byte, 1) != 1) log::error("telling the supervisor we serve: {}", std::strerror(errno));
        });
    } catch (const std::exception& e) {
        std::cerr << "rafsd: " << e.what() << "\n";
        status = 1;
    }
    std::exit(status);
}

std::string describe(int status) {
    if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
    const int sig = WTERMSIG(status);
    return fmt::format("signal {} ({})", sig, ::strsignal(sig));
}

}  // namespace

int supervise(KeptFds kept, bool restored, const SupervisorOptions& options, const Worker& worker) {
    const std::string& engine = options.engine;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) failErrno("sigprocmask");
    const int signal_fd = ::signalfd(-1, &set, SFD_CLOEXEC);
    if (signal_fd < 0) failErrno("signalfd");

    bool told_ready = false;
    bool stopping = false;
    std::chrono::seconds hold_delay{1};
    std::deque<std::chrono::steady_clock::time_point> restarts;
    for (;;) {
        int ready_fd = -1;
        KeptFds::Link link = KeptFds::makeLink();
        const pid_t pid = forkWorker(kept, link, signal_fd, restored, options, worker, ready_fd);
        log::info("{} worker started (pid {}{})", engine, pid, restored ? ", failover" : "");
        bool ready = false;
        int status = 0;
        for (;;) {
            pollfd fds[3] = {{signal_fd, POLLIN, 0}, {ready_fd, POLLIN, 0}, {link.supervisor.get(), POLLIN, 0}};
            if (::poll(fds, 3, -1) < 0) {
                if (errno == EINTR) continue;
                failErrno("poll");
            }
            if (ready_fd >= 0 && fds[1].revents != 0) {
                char byte = 0;
                if (::read(ready_fd, &byte, 1) == 1) {
                    ready = true;
                    hold_delay = std::chrono::seconds(1);
                    log::info("{} worker {} serves", engine, pid);
                    if (!told_ready) sd_notify(0, "READY=1");
                    told_ready = true;
                }
                closeOrWarn(ready_fd, "worker ready pipe");
                ready_fd = -1;
            }
            if (link.supervisor.get() >= 0 && fds[2].revents != 0 && !kept.serveLink(link.supervisor.get())) {
                link.supervisor = rafs::UniqueFd();  // the worker's end is closed: it is exiting
            }
            if ((fds[0].revents & POLLIN) == 0) continue;
            signalfd_siginfo info{};
            if (::read(signal_fd, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) failErrno("read signalfd");
            const auto sig = static_cast<int>(info.ssi_signo);
            if (sig == SIGINT || sig == SIGTERM) {
                if (!stopping) sd_notify(0, "STOPPING=1");
                stopping = true;
                if (::kill(pid, sig) != 0) log::warn("forwarding signal {} to worker {}: {}", sig, pid, std::strerror(errno));
                continue;
            }
            const pid_t reaped = ::waitpid(pid, &status, WNOHANG);
            if (reaped < 0) failErrno("waitpid");
            if (reaped == pid) break;
        }
        if (ready_fd >= 0) closeOrWarn(ready_fd, "worker ready pipe");
        // What the worker kept just before it died is still queued, with its fds.
        if (link.supervisor.get() >= 0) kept.serveLink(link.supervisor.get());
        // With fail_closed, once mounts may live on the kept fds, no worker's end is a reason to
        // give them up: only a stop is.
        const bool hold = options.fail_closed && (ready || restored) && !stopping &&
                          !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (!hold && (WIFEXITED(status) || stopping || !ready)) {
            closeOrWarn(signal_fd, "signalfd");
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            log::error("{} worker {} died ({}){}", engine, pid, describe(status),
                       ready ? " while stopping" : " before it served; giving up");
            return 1;
        }
        const char* ended = WIFEXITED(status) ? "ended" : "died";
        const auto now = std::chrono::steady_clock::now();
        while (!restarts.empty() && now - restarts.front() > kRestartWindow) restarts.pop_front();
        if (restarts.size() >= kMaxRestarts) {
            if (!hold) {
                closeOrWarn(signal_fd, "signalfd");
                log::error("{} worker {} died ({}); {} restarts within {} s, giving up", engine, pid, describe(status),
                           restarts.size(), kRestartWindow.count());
                return 1;
            }
            log::error("{} worker {} {} ({}), {} restarts within {} s; its kernel objects stay held, so readers wait "
                       "rather than read holes: another worker in {} s", engine, pid, ended, describe(status),
                       restarts.size(), kRestartWindow.count(), hold_delay.count());
            if (waitForStop(signal_fd, hold_delay)) {
                closeOrWarn(signal_fd, "signalfd");
                log::error("stopped with no {} worker serving: its kernel objects are released with mounts up", engine);
                return 1;
            }
            hold_delay = std::min(hold_delay * 2, kMaxHoldDelay);
        } else {
            log::warn("{} worker {} {} ({}); starting another one on the same kernel objects (failover)", engine, pid,
                      ended, describe(status));
        }
        restarts.push_back(std::chrono::steady_clock::now());
        restored = true;
    }
}

}  // namespace rafsd
