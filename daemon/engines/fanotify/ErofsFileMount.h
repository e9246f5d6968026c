// EROFS file-backed mounts (fs/erofs/fileio.c, Linux 6.12+) of a local bootstrap whose data blobs
// are cache files given as devices, and their unmounting when they may still be busy.
#pragma once

#include <chrono>
#include <filesystem>
#include <utility>
#include <vector>

namespace rafsd {

// Mounts `bootstrap` read-only on `mountpoint` with `devices` as EROFS devices 1..n, through the
// fs-context API (fsopen/fsconfig/fsmount): mount(2)'s option string is cut at one page, which
// would limit the number of device= paths. Throws rafs::Error with the kernel's own messages.
void mountErofsFiles(const std::filesystem::path& bootstrap, const std::vector<std::filesystem::path>& devices,
                     const std::filesystem::path& mountpoint);

// Unmounts `mountpoint`; if it is busy, detaches it at once (nothing new can be opened there) and
// waits up to `grace` until the kernel has closed each of `files` (the mount's incomplete cache
// files: path for messages, and an fd of ours on each; inotify IN_CLOSE_NOWRITE), which happens
// when the last file open on the mount is closed. Meanwhile the caller keeps answering, and
// denying, events: the fanotify group must not close while such a file is open. Logs, never
// throws; false if files are still open when `grace` runs out.
bool unmountWhenClosed(const std::filesystem::path& mountpoint,
                       const std::vector<std::pair<std::filesystem::path, int>>& files,
                       std::chrono::milliseconds grace);

}  // namespace rafsd
