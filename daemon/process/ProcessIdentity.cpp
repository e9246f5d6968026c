#include "daemon/process/ProcessIdentity.h"

#include "format/Error.h"
#include "daemon/core/Log.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace rafsd {

std::optional<uint64_t> ProcessIdentity::startTimeOf(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!in || !std::getline(in, stat)) return std::nullopt;
    // The command name (field 2) may hold spaces and parentheses: fields 3.. follow its last ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream fields(stat.substr(close + 1));
    std::string field;
    for (int i = 3; i <= 22; ++i) {
        if (!(fields >> field)) return std::nullopt;
    }
    try {
        return std::stoull(field);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

ProcessIdentity ProcessIdentity::self() {
    const pid_t pid = ::getpid();
    return {pid, startTimeOf(pid).value_or(0)};
}

namespace {

// The state letter of field 3 of /proc/PID/stat, or 0 if there is no such process.
char stateOf(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!std::getline(in, stat)) return 0;
    const size_t close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() ? stat[close + 2] : 0;
}

}  // namespace

// A zombie keeps its /proc entry until its parent reaps it, but has closed its fds: gone, for what
// matters here.
bool ProcessIdentity::alive() const {
    const auto start = startTimeOf(pid);
    return start && *start == start_time && stateOf(pid) != 'Z';
}

void endProcess(const ProcessIdentity& process, std::chrono::milliseconds timeout) {
    if (process.pid <= 0 || process.pid == ::getpid() || !process.alive()) return;
    log::warn("process {} of an earlier rafsd still serves; ending it before taking over", process.pid);
    if (::kill(process.pid, SIGKILL) != 0 && errno != ESRCH) rafs::failErrno(fmt::format("kill {}", process.pid));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (process.alive()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            rafs::fail("process {} of an earlier rafsd is still alive {} ms after SIGKILL", process.pid, timeout.count());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

}  // namespace rafsd
