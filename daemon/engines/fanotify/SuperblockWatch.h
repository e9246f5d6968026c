// Whether the superblock of a mount still exists. Taking a mount off its path does not end it: a
// lazily detached mount (umount -l) with a file still open on it, or a copy in a mount namespace
// made after the mount (a service's private /tmp, a container's), keeps its superblock, which goes
// on reading the mount's cache files, and a hole there reads as zeros once nothing answers its
// events. The superblock is gone only when the kernel shuts it down; an inotify watch on the
// mount's root directory then gets IN_UNMOUNT (fs/notify/fsnotify.c, fsnotify_sb_delete()), and
// does not hold the superblock itself. The unmount that drops the last reference shuts the
// superblock down before umount2() returns (fs/namespace.c: the last mntput's cleanup runs as task
// work before the return to user space), so its IN_UNMOUNT is queued by then.
//
// Thread-safe.
#pragma once

#include "format/UniqueFd.h"

#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace rafsd {

class SuperblockWatch {
public:
    // Without an inotify instance (said in one log line), nothing can be watched.
    SuperblockWatch();

    // Watch with `fd` from now on: an instance a previous worker watched with, which the
    // supervisor keeps, so that its watches outlive that worker. Before any add().
    void adopt(rafs::UniqueFd fd);
    int fd() const { return fd_.get(); }

    // Watches the superblock of the mount whose root directory `root` names (a path, or
    // /proc/self/fd/N of an fd on it). Returns the watch's id, or -1 (said in one log line) if it
    // cannot be watched: such a superblock is never known to be gone.
    int add(const std::string& root, const std::string& what);
    // Whether the superblock watched as `id` is gone: its IN_UNMOUNT read, or its watch no longer
    // in the instance (/proc/self/fdinfo lists them; a previous worker may have read the event).
    // False for -1.
    bool gone(int id);
    // Whether every one of `ids` is gone (one read of fdinfo for all).
    bool allGone(const std::vector<int>& ids);
    // Waits until every one of `ids` is gone (true), or `deadline` (false).
    bool waitGone(const std::vector<int>& ids, std::chrono::steady_clock::time_point deadline);
    // Stops watching `id` (gone or not); nothing for -1.
    void forget(int id);

private:
    void readEvents();  // mutex_ held
    // The ids fdinfo lists; nullopt if it cannot be read. mutex_ held.
    std::optional<std::set<int>> listedWatches() const;
    // `id` just added: whether fdinfo lists it, once per process (else it is not used). mutex_ held.
    void checkListed(int id);

    rafs::UniqueFd fd_;
    std::mutex mutex_;
    std::set<int> gone_;
    bool fdinfo_lists_ = true;  // /proc/self/fdinfo lists our watches
    bool fdinfo_checked_ = false;
};

}  // namespace rafsd
