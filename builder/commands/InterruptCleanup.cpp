#include "builder/commands/InterruptCleanup.h"

#include "format/Error.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <map>
#include <string>
#include <thread>

namespace rafs::build {

namespace {

std::recursive_mutex g_mutex;
std::map<uint64_t, std::filesystem::path> g_paths;  // by registration, oldest first
uint64_t g_next_id = 1;

sigset_t cleanupSignals() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
    return set;
}

[[noreturn]] void cleanUpAndExit(int sig) {
    // Held to the end: a registration or a commit that comes now waits, and the process ends.
    g_mutex.lock();
    for (auto it = g_paths.rbegin(); it != g_paths.rend(); ++it) {
        std::error_code ignored;  // best effort: the process ends either way
        std::filesystem::remove_all(it->second, ignored);
    }
    const std::string line = std::string("mkrafs: interrupted by SIG") + sigabbrev_np(sig) + "\n";
    [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
    ::_exit(128 + sig);
}

}  // namespace

void installInterruptCleanup() {
    const sigset_t set = cleanupSignals();
    if (const int rc = ::pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0) {
        fail("cannot block SIGINT, SIGTERM and SIGHUP: {}", ::strerror(rc));
    }
    std::thread([set] {
        int sig = 0;
        // sigwait fails only for a set of invalid signals, which this one is not.
        while (::sigwait(&set, &sig) != 0) {
        }
        cleanUpAndExit(sig);
    }).detach();
}

RemovedUnlessKept::RemovedUnlessKept(std::filesystem::path path) : path_(std::move(path)) {
    std::lock_guard lock(g_mutex);
    id_ = g_next_id++;
    g_paths.emplace(id_, path_);
}

RemovedUnlessKept::~RemovedUnlessKept() {
    if (id_ == 0) return;
    // Removed before it is unregistered: a signal meanwhile removes it too, never leaves it.
    std::error_code ignored;  // best effort: the run is failing already
    std::filesystem::remove_all(path_, ignored);
    std::lock_guard lock(g_mutex);
    g_paths.erase(id_);
}

void RemovedUnlessKept::keep() {
    if (id_ == 0) return;
    std::lock_guard lock(g_mutex);
    g_paths.erase(id_);
    id_ = 0;
}

std::unique_lock<std::recursive_mutex> holdInterrupts() { return std::unique_lock(g_mutex); }

}  // namespace rafs::build
