#include "daemon/process/InPlaceRestart.h"

#include "format/ChildProcess.h"
#include "format/Error.h"

#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

extern char** environ;

namespace rafsd {

namespace {

constexpr auto kCheckTimeout = std::chrono::seconds(30);

// cachefiles' `restore` command (fs/cachefiles/daemon.c, cachefiles_daemon_restore) came with
// Linux 6.8; writing it is the only other probe, and it would make the kernel resend requests the
// serving worker is answering.
bool kernelHasCachefilesRestore() {
    utsname name{};
    if (::uname(&name) != 0) return false;
    int major = 0, minor = 0;
    if (std::sscanf(name.release, "%d.%d", &major, &minor) != 2) return false;
    return major > 6 || (major == 6 && minor >= 8);
}

bool isListenVariable(const char* entry) {
    for (const char* name : {"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "RAFSD_RELOAD_FDS="}) {
        if (std::strncmp(entry, name, std::strlen(name)) == 0) return true;
    }
    return false;
}

}  // namespace

InPlaceRestart InPlaceRestart::ofThisProcess(int argc, char** argv) {
    InPlaceRestart restart;
    std::error_code error;
    restart.executable = std::filesystem::read_symlink("/proc/self/exe", error).string();
    if (error) rafs::fail("/proc/self/exe: {}", error.message());
    restart.argv.assign(argv, argv + argc);
    return restart;
}

void InPlaceRestart::check() const {
    if (needs_cachefiles_restore && !kernelHasCachefilesRestore()) {
        rafs::fail("a reload with the fscache engine needs Linux 6.8 or later (cachefiles 'restore'); restart "
                   "rafsd instead, which unmounts its images");
    }
    if (control_socket >= 0 && control_socket != 3) {
        rafs::fail("the activated control socket is fd {}, not 3, so it cannot be passed on", control_socket);
    }
    rafs::ChildRun run;
    run.argv = argv;
    run.argv[0] = executable;
    run.argv.push_back("--check-config");
    run.stderr_to_output = true;
    run.timeout = kCheckTimeout;
    const rafs::ChildResult result = rafs::runChild(run);
    if (result.timed_out) rafs::fail("{} --check-config: no answer within {} s", executable, kCheckTimeout.count());
    if (!result.exitedWith(0)) {
        const std::string last = result.lastLine();
        rafs::fail("{} --check-config failed: {}", executable, last.empty() ? "no message" : last);
    }
}

void InPlaceRestart::exec(KeptFds& kept) const {
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
    rafs::failErrno(fmt::format("exec {}", executable), err);
}

}  // namespace rafsd
