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

// From the worker's "accepted" to its exit: saving traces. Longer, it is killed (the kernel keeps
// what it left pending, as after a crash).
constexpr auto kHandOverTimeout = std::chrono::seconds(30);
// From SIGHUP to the worker's answer: its control requests in progress end first (a mount may be
// talking to a registry). Longer, the reload is called off; the worker is not disturbed.
constexpr auto kAnswerTimeout = std::chrono::minutes(5);
// Workers of a program a reload started that died before they served, before it gives up and the
// holder of the previous program takes over.
constexpr int kMaxUnreadyAfterReload = 3;

// Waits `delay` for a stop signal on `signal_fd` (SIGCHLD ignored: no worker runs); returns it, or
// 0 if none came.
int waitForSignal(int signal_fd, std::chrono::seconds delay) {
    const auto until = std::chrono::steady_clock::now() + delay;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) return 0;
        pollfd p{signal_fd, POLLIN, 0};
        const int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n < 0) {
            if (errno == EINTR) continue;
            failErrno("poll");
        }
        if (n == 0) return 0;
        signalfd_siginfo info{};
        if (::read(signal_fd, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) failErrno("read signalfd");
        const auto sig = static_cast<int>(info.ssi_signo);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) return sig;
    }
}

// A reload's first step: whether the new program would serve (else the worker is not disturbed).
bool reloadable(const SupervisorOptions& options) {
    try {
        if (!options.no_handover.empty()) {
            rafs::fail("{}; restart rafsd instead, which unmounts its images", options.no_handover);
        }
        options.reload->check();
        return true;
    } catch (const std::exception& e) {
        log::error("reload refused: {}; serving on", e.what());
        return false;
    }
}

// A reload's last step: this process becomes the new program, `kept` passed on, behind a holder
// (InPlaceRestart.h). Returns only in a process that must go on supervising with this program:
// this one if the exec failed, or the holder once the new program ended before it served.
// No holder under systemd: its fd store keeps the objects and it restarts a program that fails, and
// a holder would serve beside that restart. None either while the holder of an earlier reload
// still waits (`release` open: this program never served): the new program gets its pipe, and the
// program that last served stays the one to fall back to.
void becomeNewProgram(const InPlaceRestart& reload, KeptFds& kept, rafs::UniqueFd& release) {
    log::info("reloading: {} takes the mounts over", reload.executable);
    try {
        // Not checked again here (it was before the worker was asked): the readers wait now, and
        // a program that changed since and fails is what the holder is for.
        pid_t holder = -1;
        rafs::UniqueFd release_write;
        if (release.get() >= 0) {
            release_write = std::move(release);
        } else if (std::getenv("NOTIFY_SOCKET") == nullptr) {
            // A socket, not a pipe: the new program's write to a holder that was killed must not
            // raise SIGPIPE in the process holding every kernel object.
            int ends[2];
            if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) failErrno("socketpair");
            rafs::UniqueFd release_read(ends[0]);
            release_write = rafs::UniqueFd(ends[1]);
            holder = ::fork();
            if (holder < 0) failErrno("fork");
            if (holder == 0) {
                release_write = rafs::UniqueFd();
                if (InPlaceRestart::waitForRelease(release_read.get())) ::_exit(0);
                log::error("the new rafsd ended before it served; this process (pid {}) serves on with the previous "
                           "program and configuration", ::getpid());
                return;
            }
        }
        try {
            reload.exec(kept, release_write.get());
        } catch (...) {
            // This process carries on: its own holder must not take over, an earlier one waits on.
            if (holder > 0) {
                ::kill(holder, SIGKILL);
                while (::waitpid(holder, nullptr, 0) < 0 && errno == EINTR) {
                }
            } else {
                release = std::move(release_write);
            }
            throw;
        }
    } catch (const std::exception& e) {
        log::error("reload failed: {}; a worker of this rafsd takes the mounts over", e.what());
    }
    sd_notify(0, "READY=1");
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

int supervise(KeptFds kept, bool restored, const SupervisorOptions& options, const Worker& worker,
              rafs::UniqueFd release) {
    const std::string& engine = options.engine;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) failErrno("sigprocmask");
    const int signal_fd = ::signalfd(-1, &set, SFD_CLOEXEC);
    if (signal_fd < 0) failErrno("signalfd");

    bool told_ready = false;
    bool stopping = false;
    bool stopped_while_holding = false;  // a stop came while no worker ran: the next one is to unmount
    std::chrono::seconds hold_delay{1};
    std::deque<std::chrono::steady_clock::time_point> restarts;
    int unready_after_reload = 0;
    for (;;) {
        int ready_fd = -1;
        KeptFds::Link link = KeptFds::makeLink();
        const pid_t pid = forkWorker(kept, link, signal_fd, restored, options, worker, ready_fd);
        log::info("{} worker started (pid {}{})", engine, pid, restored ? ", failover" : "");
        bool ready = false;
        bool reloading = false;  // the worker was asked to hand over
        bool accepted = false;   // and said it does
        bool hand_over_killed = false;
        std::chrono::steady_clock::time_point answer_deadline, hand_over_deadline;
        int status = 0;
        for (;;) {
            pollfd fds[3] = {{signal_fd, POLLIN, 0}, {ready_fd, POLLIN, 0}, {link.supervisor.get(), POLLIN, 0}};
            int timeout_ms = -1;
            if (reloading && !hand_over_killed) {
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    (accepted ? hand_over_deadline : answer_deadline) - std::chrono::steady_clock::now());
                if (left.count() > 0) {
                    timeout_ms = static_cast<int>(left.count());
                } else if (accepted) {
                    log::warn("{} worker {} did not hand over within {} s; killing it", engine, pid,
                              kHandOverTimeout.count());
                    if (::kill(pid, SIGKILL) != 0) log::warn("killing worker {}: {}", pid, std::strerror(errno));
                    hand_over_killed = true;
                } else {
                    log::error("{} worker {} did not answer the reload within {} s; reload called off", engine, pid,
                               std::chrono::duration_cast<std::chrono::seconds>(kAnswerTimeout).count());
                    sd_notify(0, "READY=1");
                    reloading = false;
                }
            }
            const int polled = ::poll(fds, 3, timeout_ms);
            if (polled < 0) {
                if (errno == EINTR) continue;
                failErrno("poll");
            }
            if (polled == 0) continue;
            if (ready_fd >= 0 && fds[1].revents != 0) {
                char byte = 0;
                if (::read(ready_fd, &byte, 1) == 1) {
                    ready = true;
                    hold_delay = std::chrono::seconds(1);
                    log::info("{} worker {} serves", engine, pid);
                    if (!told_ready && !stopping) sd_notify(0, "READY=1");
                    told_ready = true;
                    InPlaceRestart::release(release);
                    // A stop that came while no worker served (a reload that failed): now this one
                    // unmounts.
                    if (stopping && ::kill(pid, SIGTERM) != 0) {
                        log::warn("stopping worker {}: {}", pid, std::strerror(errno));
                    }
                }
                closeOrWarn(ready_fd, "worker ready pipe");
                ready_fd = -1;
            }
            if (link.supervisor.get() >= 0 && fds[2].revents != 0 && !kept.serveLink(link.supervisor.get())) {
                link.supervisor = rafs::UniqueFd();  // the worker's end is closed: it is exiting
            }
            if (const std::optional<bool> answer = kept.takeHandOverAnswer(); answer && reloading && !accepted) {
                if (*answer) {
                    accepted = true;
                    hand_over_deadline = std::chrono::steady_clock::now() + kHandOverTimeout;
                } else {
                    log::error("reload refused by {} worker {} (its log says why); serving on", engine, pid);
                    sd_notify(0, "READY=1");
                    reloading = false;
                }
            }
            if ((fds[0].revents & POLLIN) == 0) continue;
            signalfd_siginfo info{};
            if (::read(signal_fd, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) failErrno("read signalfd");
            const auto sig = static_cast<int>(info.ssi_signo);
            if (sig == SIGHUP && options.reload) {
                if (!stopping && !reloading && reloadable(options)) {
                    sd_notify(0, "RELOADING=1");
                    log::info("SIGHUP: reloading; {} worker {} hands its mounts over", engine, pid);
                    (void)kept.takeHandOverAnswer();  // one left from a SIGHUP the worker got directly
                    if (::kill(pid, SIGHUP) != 0) log::warn("asking worker {} to hand over: {}", pid, std::strerror(errno));
                    reloading = true;
                    accepted = false;
                    answer_deadline = std::chrono::steady_clock::now() + kAnswerTimeout;
                }
                continue;
            }
            if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
                if (!stopping) sd_notify(0, "STOPPING=1");
                stopping = true;
                if (::kill(pid, sig) != 0) log::warn("forwarding signal {} to worker {}: {}", sig, pid, std::strerror(errno));
                continue;
            }
            // Every child that ended: the worker, or a reload's holder that was released.
            bool worker_ended = false;
            int child_status = 0;
            for (pid_t ended = 0; (ended = ::waitpid(-1, &child_status, WNOHANG)) > 0;) {
                if (ended == pid) {
                    status = child_status;
                    worker_ended = true;
                }
            }
            if (worker_ended) break;
        }
        if (ready_fd >= 0) closeOrWarn(ready_fd, "worker ready pipe");
        // What the worker kept just before it died is still queued, with its fds.
        if (link.supervisor.get() >= 0) kept.serveLink(link.supervisor.get());
        // A worker that handed over (or was killed doing so) left its mounts up: the new program
        // takes them over, or, if it cannot or a stop came meanwhile, another worker of this one.
        const bool handed_over = WIFEXITED(status) && WEXITSTATUS(status) == kWorkerHandedOver;
        if (reloading || handed_over) {
            if (!stopping && options.reload && (reloading || reloadable(options))) {
                if (!reloading) sd_notify(0, "RELOADING=1");
                becomeNewProgram(*options.reload, kept, release);
            }
            log::info("{} worker {} handed over; starting another one on the same kernel objects", engine, pid);
            restored = true;
            continue;
        }
        // A program that a reload started and whose workers keep failing before they serve gives
        // the mounts back to the holder of the previous one (which carries on when this ends).
        if (release.get() >= 0 && !ready && !stopping && ++unready_after_reload >= kMaxUnreadyAfterReload) {
            closeOrWarn(signal_fd, "signalfd");
            log::error("{} worker {} {} before it served ({}), {} times since the reload; the previous rafsd takes "
                       "the mounts back", engine, pid, WIFEXITED(status) ? "ended" : "died", describe(status),
                       unready_after_reload);
            return 1;
        }
        // With fail_closed, once mounts may live on the kept fds, no worker's end is a reason to
        // give them up: only a stop is. Nor, whatever the engine, is the end of a worker that failed
        // to take mounts over: it left them up (rafsd.cpp, takeOverOrExit), and released,
        // fscache's would fail; their readers wait for a worker that can.
        const bool hold = (options.fail_closed ? ready || restored : restored && !ready) && !stopping &&
                          !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (!hold && (WIFEXITED(status) || stopping || !ready)) {
            closeOrWarn(signal_fd, "signalfd");
            if (stopped_while_holding && !ready) {
                log::error("{} worker {} {} ({}) before it could unmount: the kernel objects are released with mounts up",
                           engine, pid, WIFEXITED(status) ? "ended" : "died", describe(status));
                return 1;
            }
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            log::error("{} worker {} died ({}){}", engine, pid, describe(status),
                       ready ? " while stopping" : " before it served; giving up");
            return 1;
        }
        const char* ended = WIFEXITED(status) ? "ended" : "died";
        if (!options.no_handover.empty()) {
            closeOrWarn(signal_fd, "signalfd");
            log::error("{} worker {} {} ({}) and no other can take its mounts over: {}; giving up", engine, pid, ended,
                       describe(status), options.no_handover);
            // Out of systemd's fd store too, or the rafsd it restarts would take them and fail the same way.
            for (const std::string& name : kept.names()) kept.drop(name);
            return 1;
        }
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
                       "rather than {}: another worker in {} s", engine, pid, ended, describe(status),
                       restarts.size(), kRestartWindow.count(), options.fail_closed ? "read holes" : "fail",
                       hold_delay.count());
            const int sig = waitForSignal(signal_fd, hold_delay);
            if (sig == SIGHUP && options.reload) {
                if (reloadable(options)) {
                    sd_notify(0, "RELOADING=1");
                    becomeNewProgram(*options.reload, kept, release);
                }
            } else if (sig != 0) {
                // Released now, the objects would leave the mounts up unserved (a fanotify group's
                // holes read as zeros): one more worker, started at once, unmounts if it can serve.
                sd_notify(0, "STOPPING=1");
                stopping = true;
                stopped_while_holding = true;
                log::warn("stopping with no {} worker serving: one more worker takes the mounts over to unmount them",
                          engine);
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
