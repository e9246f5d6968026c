#include "daemon/process/InPlaceRestart.h"

#include "format/ChildProcess.h"
#include "format/Error.h"
#include "daemon/core/Log.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

extern char** environ;

namespace rafsd {

namespace {

constexpr auto kCheckTimeout = std::chrono::seconds(30);

constexpr const char* kEngineEnv = "RAFSD_RELOAD_ENGINE";
constexpr const char* kReleaseEnv = "RAFSD_RELOAD_RELEASE";

// The variables exec() sets afresh.
bool isListenVariable(std::string_view entry) {
    for (const std::string_view name :
         {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", KeptFds::kReloadEnv, kEngineEnv, kReleaseEnv}) {
        if (entry.size() > name.size() && entry.starts_with(name) && entry[name.size()] == '=') return true;
    }
    return false;
}

}  // namespace

InPlaceRestart InPlaceRestart::ofThisProcess(int argc, char** argv) {
    InPlaceRestart restart;
    restart.argv.assign(argv, argv + argc);
    // The path it was started by (found in PATH as the shell found it), not what that resolves
    // to: an upgrade may move a symlink.
    if (argc > 0 && std::strchr(argv[0], '/') != nullptr) {
        restart.executable = std::filesystem::absolute(argv[0]).string();
        return restart;
    }
    const char* path = argc > 0 ? std::getenv("PATH") : nullptr;
    for (std::string_view rest = path != nullptr ? path : ""; !rest.empty();) {
        const size_t colon = rest.find(':');
        const std::string dir(rest.substr(0, colon));
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
        const std::filesystem::path candidate = std::filesystem::path(dir.empty() ? "." : dir) / argv[0];
        if (::access(candidate.c_str(), X_OK) == 0) {
            restart.executable = std::filesystem::absolute(candidate).string();
            return restart;
        }
    }
    std::error_code error;
    restart.executable = std::filesystem::read_symlink("/proc/self/exe", error).string();
    if (error) rafs::fail("/proc/self/exe: {}", error.message());
    return restart;
}

void InPlaceRestart::check() const {
    if (control_socket >= 0 && control_socket != SD_LISTEN_FDS_START) {
        rafs::fail("the activated control socket is fd {}, not {}, so it cannot be passed on", control_socket,
                   SD_LISTEN_FDS_START);
    }
    rafs::ChildRun run;
    run.argv = argv;
    run.argv[0] = executable;
    run.argv.push_back("--check-config");
    run.stderr_to_output = true;
    run.timeout = kCheckTimeout;
    const rafs::ChildResult result = rafs::runChild(run);
    if (result.timed_out) rafs::fail("{} --check-config: no answer within {} s", executable, kCheckTimeout.count());
    const std::string last = result.lastLine();
    if (!result.exitedWith(0)) rafs::fail("{} --check-config failed: {}", executable, last.empty() ? "no message" : last);
    const std::string said = "state_dir " + state_dir;
    if (!state_dir.empty() && !last.ends_with(said)) {
        rafs::fail("the new configuration keeps its state elsewhere ({}), where the mount table of this rafsd ({}) is "
                   "not; restart rafsd instead", last, state_dir);
    }
    // A worker taking the mounts over would write their chunk maps there while their cache files
    // (kept fds) stay here, unlocked, where another rafsd could take them.
    if (!cache_dir.empty() && last.find("; cache_dir ") == std::string::npos) {
        rafs::fail("the new program does not say where it caches ({}): older than this one? restart rafsd instead",
                   last);
    }
    if (!cache_dir.empty() && last.find("; cache_dir " + cache_dir + "; ") == std::string::npos) {
        rafs::fail("the new configuration caches elsewhere ({}), not where this rafsd's mounts have their cache "
                   "files ({}); restart rafsd instead", last, cache_dir);
    }
}

void InPlaceRestart::exec(KeptFds& kept, int release) const {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        if (!isListenVariable(*e)) env.emplace_back(*e);
    }
    if (control_socket >= 0) {
        if (::fcntl(control_socket, F_SETFD, 0) != 0) rafs::failErrno("passing the control socket on");
        env.push_back(fmt::format("LISTEN_PID={}", ::getpid()));
        env.push_back("LISTEN_FDS=1");
        env.push_back("LISTEN_FDNAMES=rafsd-control");
    }
    if (release >= 0) {
        if (::fcntl(release, F_SETFD, 0) != 0) rafs::failErrno("passing the holder's pipe on");
        env.push_back(fmt::format("{}={}", kReleaseEnv, release));
    }
    env.push_back(fmt::format("{}={}", kEngineEnv, engine));
    const rafs::UniqueFd list = kept.prepareExec();
    env.push_back(fmt::format("{}={}", KeptFds::kReloadEnv, list.get()));
    std::vector<std::string> args = argv;
    std::vector<char*> argv_pointers, env_pointers;
    for (std::string& a : args) argv_pointers.push_back(a.data());
    argv_pointers.push_back(nullptr);
    for (std::string& e : env) env_pointers.push_back(e.data());
    env_pointers.push_back(nullptr);
    ::execve(executable.c_str(), argv_pointers.data(), env_pointers.data());
    const int err = errno;
    kept.abortExec();
    if (release >= 0) ::fcntl(release, F_SETFD, FD_CLOEXEC);
    rafs::failErrno(fmt::format("exec {}", executable), err);
}

std::optional<std::string> InPlaceRestart::reloadedEngine() {
    const char* value = std::getenv(kEngineEnv);
    if (value == nullptr) return std::nullopt;
    std::string engine = value;
    ::unsetenv(kEngineEnv);
    return engine;
}

rafs::UniqueFd InPlaceRestart::takeRelease() {
    const char* value = std::getenv(kReleaseEnv);
    if (value == nullptr) return {};
    const int fd = std::atoi(value);
    ::unsetenv(kReleaseEnv);
    if (fd < 0 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        log::warn("{}={}: not an open fd; no holder to release", kReleaseEnv, value);
        return {};
    }
    return rafs::UniqueFd(fd);
}

void InPlaceRestart::release(rafs::UniqueFd& release) {
    if (release.get() < 0) return;
    const char byte = 1;
    if (::send(release.get(), &byte, 1, MSG_NOSIGNAL) != 1) {
        log::warn("releasing the previous rafsd's holder: {}", std::strerror(errno));
    }
    release = rafs::UniqueFd();
}

bool InPlaceRestart::waitForRelease(int release) {
    for (;;) {
        char byte = 0;
        const ssize_t n = ::read(release, &byte, 1);
        if (n < 0 && errno == EINTR) continue;
        return n == 1;
    }
}

}  // namespace rafsd
