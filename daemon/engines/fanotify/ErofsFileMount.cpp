#include "daemon/engines/fanotify/ErofsFileMount.h"

#include "format/Error.h"
#include "daemon/core/Log.h"
#include "format/UniqueFd.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

namespace rafsd {

namespace {

using rafs::fail;
using rafs::failErrno;

// Throws for a failed fs-context call, with the messages the kernel attached to the context.
[[noreturn]] void failMount(int fsfd, const std::string& what) {
    const int err = errno;
    std::string messages;
    char line[512];
    for (;;) {
        // ENODATA once the log is empty.
        const ssize_t n = ::read(fsfd, line, sizeof line);
        if (n <= 0) break;
        messages += messages.empty() ? " (kernel: " : "; ";
        messages.append(line, static_cast<size_t>(n));
    }
    if (!messages.empty()) messages += ')';
    fail("{}: {}{}", what, std::strerror(err), messages);
}

}  // namespace

void mountErofsFiles(const std::filesystem::path& bootstrap, const std::vector<std::filesystem::path>& devices,
                     const std::filesystem::path& mountpoint) {
    const std::string what = fmt::format("cannot mount {} on {}", bootstrap.native(), mountpoint.native());
    rafs::UniqueFd fs(::fsopen("erofs", FSOPEN_CLOEXEC));
    if (fs.get() < 0) {
        if (errno == ENODEV) fail("{}: kernel has no EROFS (CONFIG_EROFS_FS)", what);
        failErrno(what);
    }
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "source", bootstrap.c_str(), 0) != 0) {
        failMount(fs.get(), what);
    }
    for (const std::filesystem::path& device : devices) {
        if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "device", device.c_str(), 0) != 0) {
            failMount(fs.get(), fmt::format("{}: device {}", what, device.native()));
        }
    }
    if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
        if (errno == ENOTBLK) {
            fail("{}: kernel lacks EROFS file-backed mounts (CONFIG_EROFS_FS_BACKED_BY_FILE)", what);
        }
        failMount(fs.get(), what);
    }
    rafs::UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY));
    if (mnt.get() < 0) failMount(fs.get(), what);
    if (::move_mount(mnt.get(), "", AT_FDCWD, mountpoint.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
        failErrno(what);
    }
}

std::optional<BusyMount> unmountOrDetach(const std::filesystem::path& mountpoint,
                                         std::vector<MarkedFiles::MountFile> files, int watch) {
    if (::umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW) == 0) return std::nullopt;
    BusyMount busy{mountpoint, std::move(files), {}, false};
    if (errno == EINVAL) {
        // No longer a mount point: unmounted by hand, maybe lazily (umount -l) and still in use.
        log::warn("{} was unmounted by someone else; its files may still be open there", mountpoint.native());
        return busy;
    }
    if (errno != EBUSY) {
        log::error("cannot unmount {}: {}", mountpoint.native(), std::strerror(errno));
        return busy;
    }
    busy.watched = watch >= 0;
    for (const MarkedFiles::MountFile& file : busy.files) {
        if (watch < 0) break;
        // Through our fd: the path may have been replaced meanwhile.
        const std::string proc_path = fmt::format("/proc/self/fd/{}", file.fd);
        const int wd = ::inotify_add_watch(watch, proc_path.c_str(), IN_CLOSE_NOWRITE);
        if (wd < 0) {
            log::warn("cannot watch cache file {}: {}", file.path.native(), std::strerror(errno));
            busy.watched = false;
        } else {
            busy.open.insert(wd);
        }
    }
    if (::umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW | MNT_DETACH) != 0) {
        log::error("cannot detach {}: {}", mountpoint.native(), std::strerror(errno));
        busy.watched = false;
        return busy;
    }
    log::info("{} busy: detached; serving the files still open there", mountpoint.native());
    return busy;
}

void waitForCloses(int watch, std::vector<BusyMount>& busy, std::chrono::steady_clock::time_point deadline) {
    const auto waiting = [&] {
        return std::any_of(busy.begin(), busy.end(), [](const BusyMount& m) { return m.watched && !m.gone(); });
    };
    if (watch < 0 || !waiting()) {
        // Nothing whose close could be seen: the caller's deadline is all there is to wait for.
        std::this_thread::sleep_until(deadline);
        return;
    }
    alignas(inotify_event) char buffer[4096];
    while (waiting()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return;
        pollfd p{watch, POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR) {
            log::warn("poll on inotify: {}", std::strerror(errno));
            return;
        }
        for (;;) {
            const ssize_t n = ::read(watch, buffer, sizeof buffer);
            if (n <= 0) break;
            for (ssize_t pos = 0; pos + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
                inotify_event event{};
                std::memcpy(&event, buffer + pos, sizeof event);
                if ((event.mask & (IN_CLOSE_NOWRITE | IN_IGNORED)) != 0) {
                    for (BusyMount& m : busy) m.open.erase(event.wd);
                }
                pos += static_cast<ssize_t>(sizeof(inotify_event) + event.len);
            }
        }
    }
}

}  // namespace rafsd
