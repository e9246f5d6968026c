// EROFS file-backed mounts (fs/erofs/fileio.c, Linux 6.12+) of a local bootstrap whose data blobs
// are cache files given as devices, and their unmounting at a stop, when they may still be busy.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <vector>

namespace rafsd {

// Mounts `bootstrap` read-only on `mountpoint` with `devices` as EROFS devices 1..n, through the
// fs-context API (fsopen/fsconfig/fsmount): mount(2)'s option string is cut at one page, which
// would limit the number of device= paths. `attaching` gets an fd on the new mount's root once it
// exists, before it is attached at `mountpoint` (if it throws, nothing is). Throws rafs::Error with
// the kernel's own messages.
void mountErofsFiles(const std::filesystem::path& bootstrap, const std::vector<std::filesystem::path>& devices,
                     const std::filesystem::path& mountpoint, const std::function<void(int root)>& attaching);

// Takes the mount off `mountpoint` for a stop if nothing uses it (umount2 without MNT_DETACH).
// Whether its superblock lives on is SuperblockWatch's to say. Logs what is neither Done nor Busy,
// never throws.
enum class Unmount {
    Done,
    Busy,        // still mounted there: EBUSY
    NotMounted,  // no mount point any more (unmounted by someone else)
    Failed,
};
Unmount unmountIfIdle(const std::filesystem::path& mountpoint);

// Detaches a busy mount from `mountpoint` (MNT_DETACH): nothing new can be opened there, and what
// is open reads on. Logs, never throws.
void detach(const std::filesystem::path& mountpoint);

// Drops the page cache of every regular file of the mount at `root` (posix_fadvise DONTNEED), so
// that their next reads reach the backing files again: for a mount whose fanotify group died, when
// the kernel let every read of a hole through and EROFS kept the zeros (mm/fadvise.c: clean pages
// not mapped by a process go). Returns how many files it could not drop (a walk cut short by an
// error counts one); logs nothing.
size_t dropPageCache(const std::filesystem::path& root);

}  // namespace rafsd
