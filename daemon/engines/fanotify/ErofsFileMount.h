// EROFS file-backed mounts (fs/erofs/fileio.c, Linux 6.12+) of a local bootstrap whose data blobs
// are cache files given as devices, and their unmounting when they may still be busy.
#pragma once

#include "daemon/engines/fanotify/MarkedFiles.h"

#include <chrono>
#include <filesystem>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace rafsd {

// Mounts `bootstrap` read-only on `mountpoint` with `devices` as EROFS devices 1..n, through the
// fs-context API (fsopen/fsconfig/fsmount): mount(2)'s option string is cut at one page, which
// would limit the number of device= paths. Throws rafs::Error with the kernel's own messages.
void mountErofsFiles(const std::filesystem::path& bootstrap, const std::vector<std::filesystem::path>& devices,
                     const std::filesystem::path& mountpoint);

// A mount still in use when it was to be unmounted (a file open there): detached (nothing new can
// be opened there), or, if even that failed, still attached. Its superblock lives on until the last
// file open there is closed, and reads the mount's cache files without rafsd once the fanotify
// group is closed: until then the caller keeps answering, or denying, their events.
struct BusyMount {
    std::filesystem::path mountpoint;
    std::vector<MarkedFiles::MountFile> files;
    // Watch descriptors (IN_CLOSE_NOWRITE) of its cache files the kernel has not closed yet: the
    // superblock closes them all when it goes.
    std::set<int> open;
    bool watched = false;  // false: a close cannot be seen (a watch failed, or it is attached)
    bool gone() const { return watched && open.empty(); }
};

// Unmounts `mountpoint`. If it is busy, detaches it, its files (`files`: our fds on them, with
// paths for messages) watched on `watch` (an inotify fd, -1 if there is none) before the detach, so that
// no close is missed, and returns it; also returns it, unwatched, if it cannot be unmounted at all,
// or is no mount point any more (unmounted by someone else, maybe lazily: it may still be in use).
// Logs, never throws.
std::optional<BusyMount> unmountOrDetach(const std::filesystem::path& mountpoint,
                                         std::vector<MarkedFiles::MountFile> files, int watch);

// Waits until every one of `busy` that is watched is gone (its cache files closed by the kernel),
// or `deadline`; until `deadline` if none is watched.
void waitForCloses(int watch, std::vector<BusyMount>& busy, std::chrono::steady_clock::time_point deadline);

}  // namespace rafsd
