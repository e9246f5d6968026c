#include "daemon/engines/fscache/FscacheSupervisor.h"

#include "builder/format/Error.h"
#include "daemon/core/Log.h"
#include "daemon/core/UniqueFd.h"

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

constexpr const char* kStoreName = "cachefiles";
// A worker that keeps dying right after it starts serving would otherwise be restarted forever.
constexpr size_t kMaxRestarts = 10;
constexpr auto kRestartWindow = std::chrono::seconds(60);

// The device fd systemd kept for a previous instance of this service, or -1. The environment stays
// set: `rafsd serve` also looks for an activated control socket among the passed fds.
int fdFromStore() {
    char** names = nullptr;
    const int n = sd_listen_fds_with_names(0, &names);
    if (n < 0) {
        log::warn("LISTEN_FDS from systemd unusable: {}", std::strerror(-n));
        return -1;
    }
    int found = -1;
    for (int i = 0; i < n; ++i) {
        if (found < 0 && names != nullptr && std::strcmp(names[i], kStoreName) == 0) found = SD_LISTEN_FDS_START + i;
    }
    if (names != nullptr) {
        for (int i = 0; i < n; ++i) std::free(names[i]);
        std::free(names);
    }
    if (found >= 0 && ::fcntl(found, F_SETFD, FD_CLOEXEC) != 0) failErrno("fcntl on the stored cachefiles fd");
    return found;
}

// Forks a worker on its own duplicate of `device_fd`; returns its pid and, in `ready_fd`, the read
// end of the pipe it signals readiness on. Never returns in the child.
pid_t forkWorker(int device_fd, int signal_fd, bool restored, const FscacheWorker& worker, int& ready_fd) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) failErrno("pipe2");
    const pid_t supervisor = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) failErrno("fork");
    if (pid > 0) {
        closeOrWarn(pipe_fds[1], "worker ready pipe");
        ready_fd = pipe_fds[0];
        return pid;
    }
    int status = 1;
    try {
        // A worker must not outlive its supervisor: under systemd (KillMode=process) the restarted
        // service takes the device over from the fd store, and two daemons must never serve it.
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) failErrno("prctl PR_SET_PDEATHSIG");
        if (::getppid() != supervisor) std::exit(1);  // it died before prctl
        closeOrWarn(pipe_fds[0], "worker ready pipe");
        closeOrWarn(signal_fd, "signalfd");
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        if (::sigprocmask(SIG_UNBLOCK, &chld, nullptr) != 0) failErrno("sigprocmask");
        const int own = ::fcntl(device_fd, F_DUPFD_CLOEXEC, 0);
        if (own < 0) failErrno("dup of the cachefiles fd");
        status = worker(FscacheDevice::adopt(own), restored, [fd = pipe_fds[1]] {
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

SupervisedDevice acquireFscacheDevice(const std::filesystem::path& cache_dir, std::string_view tag) {
    if (const int stored = fdFromStore(); stored >= 0) {
        log::info("{}: taken from systemd's fd store; failing over", FscacheDevice::kPath);
        return {FscacheDevice::adopt(stored), true};
    }
    FscacheDevice device = FscacheDevice::open(cache_dir, tag);
    int fd = device.fd();
    const int r = sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=cachefiles", &fd, 1);
    if (r < 0) log::warn("systemd fd store: {}; a restart of rafsd cannot fail over", std::strerror(-r));
    return {std::move(device), false};
}

int superviseFscache(SupervisedDevice supervised, const FscacheWorker& worker) {
    const FscacheDevice& device = supervised.device;
    bool restored = supervised.restored;

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
    std::deque<std::chrono::steady_clock::time_point> restarts;
    for (;;) {
        int ready_fd = -1;
        const pid_t pid = forkWorker(device.fd(), signal_fd, restored, worker, ready_fd);
        log::info("fscache worker started (pid {}{})", pid, restored ? ", failover" : "");
        bool ready = false;
        int status = 0;
        for (;;) {
            pollfd fds[2] = {{signal_fd, POLLIN, 0}, {ready_fd, POLLIN, 0}};
            if (::poll(fds, 2, -1) < 0) {
                if (errno == EINTR) continue;
                failErrno("poll");
            }
            if (ready_fd >= 0 && fds[1].revents != 0) {
                char byte = 0;
                if (::read(ready_fd, &byte, 1) == 1) {
                    ready = true;
                    log::info("fscache worker {} serves", pid);
                    if (!told_ready) sd_notify(0, "READY=1");
                    told_ready = true;
                }
                closeOrWarn(ready_fd, "worker ready pipe");
                ready_fd = -1;
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
        if (WIFEXITED(status) || stopping || !ready) {
            closeOrWarn(signal_fd, "signalfd");
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            log::error("fscache worker {} died ({}){}", pid, describe(status),
                       ready ? " while stopping" : " before it served; giving up");
            return 1;
        }
        const auto now = std::chrono::steady_clock::now();
        while (!restarts.empty() && now - restarts.front() > kRestartWindow) restarts.pop_front();
        if (restarts.size() >= kMaxRestarts) {
            closeOrWarn(signal_fd, "signalfd");
            log::error("fscache worker {} died ({}); {} restarts within {} s, giving up", pid, describe(status),
                       restarts.size(), kRestartWindow.count());
            return 1;
        }
        restarts.push_back(now);
        log::warn("fscache worker {} died ({}); starting another one on the same {} (failover)", pid,
                  describe(status), FscacheDevice::kPath);
        restored = true;
    }
}

}  // namespace rafsd
