#include "daemon/engines/fanotify/SuperblockWatch.h"

#include "daemon/core/Log.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

namespace rafsd {

SuperblockWatch::SuperblockWatch() : fd_(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) {
    if (fd_.get() < 0) {
        log::error("inotify_init1: {}: unmounted mounts are taken for gone, although a copy in another mount "
                   "namespace would still read their files", std::strerror(errno));
    }
}

void SuperblockWatch::adopt(rafs::UniqueFd fd) {
    std::lock_guard lock(mutex_);
    fd_ = std::move(fd);
    gone_.clear();
    // Its watches are asked about before this process adds one: fdinfo is checked now, on a
    // watch of our own.
    const int probe = ::inotify_add_watch(fd_.get(), "/", IN_UNMOUNT);
    if (probe < 0) return;
    checkListed(probe);
    if (::inotify_rm_watch(fd_.get(), probe) != 0) log::warn("inotify_rm_watch: {}", std::strerror(errno));
}

void SuperblockWatch::checkListed(int id) {
    if (fdinfo_checked_) return;  // the kernel's format does not change while we run
    fdinfo_checked_ = true;
    const std::optional<std::set<int>> listed = listedWatches();
    if (!listed || listed->count(id) != 0) return;
    // A kernel whose fdinfo says otherwise: only the events tell, then.
    log::warn("inotify: /proc/self/fdinfo does not list watch {}; a superblock is known gone by its event only", id);
    fdinfo_lists_ = false;
}

int SuperblockWatch::add(const std::string& root, const std::string& what) {
    if (fd_.get() < 0) return -1;
    std::lock_guard lock(mutex_);
    // IN_IGNORED comes with IN_UNMOUNT (the watch goes with the superblock) without being asked for.
    const int id = ::inotify_add_watch(fd_.get(), root.c_str(), IN_UNMOUNT);
    if (id < 0) {
        log::warn("{}: cannot watch its superblock ({}): once unmounted, it is taken for gone, although a copy "
                  "in another mount namespace would still read its files", what, std::strerror(errno));
        return -1;
    }
    gone_.erase(id);  // ids are reused only after the watch they named went
    checkListed(id);
    return id;
}

void SuperblockWatch::readEvents() {
    alignas(inotify_event) char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(fd_.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        for (ssize_t pos = 0; pos + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
            inotify_event event{};
            std::memcpy(&event, buffer + pos, sizeof event);
            if ((event.mask & IN_Q_OVERFLOW) != 0) {
                // Not expected (one event per superblock); what was lost stays "alive": served on.
                log::warn("inotify: events lost; mounts whose superblock went meanwhile are served until rafsd stops");
            } else if ((event.mask & (IN_UNMOUNT | IN_IGNORED)) != 0) {
                gone_.insert(event.wd);
            }
            pos += static_cast<ssize_t>(sizeof(inotify_event) + event.len);
        }
    }
}

std::optional<std::set<int>> SuperblockWatch::listedWatches() const {
    // Lines "inotify wd:<hex> ino:<hex> sdev:<hex> ..." (fs/notify/fdinfo.c, inotify_fdinfo()).
    std::ifstream info(fmt::format("/proc/self/fdinfo/{}", fd_.get()));
    if (!info) return std::nullopt;
    std::set<int> ids;
    for (std::string line; std::getline(info, line);) {
        unsigned id = 0;
        if (std::sscanf(line.c_str(), "inotify wd:%x ", &id) == 1) ids.insert(static_cast<int>(id));
    }
    return ids;
}

bool SuperblockWatch::allGone(const std::vector<int>& ids) {
    if (fd_.get() < 0 || std::find(ids.begin(), ids.end(), -1) != ids.end()) return false;
    std::lock_guard lock(mutex_);
    readEvents();
    // Cannot tell from fdinfo: alive, unless its event says otherwise.
    const std::optional<std::set<int>> listed = fdinfo_lists_ ? listedWatches() : std::nullopt;
    return std::all_of(ids.begin(), ids.end(), [&](int id) {
        return gone_.count(id) != 0 || (listed && listed->count(id) == 0);
    });
}

bool SuperblockWatch::gone(int id) { return allGone({id}); }

bool SuperblockWatch::waitGone(const std::vector<int>& ids, std::chrono::steady_clock::time_point deadline) {
    if (std::find(ids.begin(), ids.end(), -1) != ids.end()) {
        std::this_thread::sleep_until(deadline);  // one is never known to be gone
        return false;
    }
    for (;;) {
        if (allGone(ids)) return true;
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
            log::warn("poll on inotify: {}", std::strerror(errno));
            std::this_thread::sleep_until(deadline);
            return false;
        }
    }
}

void SuperblockWatch::forget(int id) {
    if (id < 0) return;
    std::lock_guard lock(mutex_);
    readEvents();
    // EINVAL: the watch went with its superblock.
    if (gone_.erase(id) == 0 && ::inotify_rm_watch(fd_.get(), id) != 0 && errno != EINVAL) {
        log::warn("inotify_rm_watch: {}", std::strerror(errno));
    }
}

}  // namespace rafsd
