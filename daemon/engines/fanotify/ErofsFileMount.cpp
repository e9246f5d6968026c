#include "daemon/engines/fanotify/ErofsFileMount.h"

#include "format/Error.h"
#include "daemon/core/Log.h"
#include "format/UniqueFd.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

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
                     const std::filesystem::path& mountpoint, const std::function<void(int root)>& attaching) {
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
    attaching(mnt.get());
    if (::move_mount(mnt.get(), "", AT_FDCWD, mountpoint.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
        failErrno(what);
    }
}

Unmount unmountIfIdle(const std::filesystem::path& mountpoint) {
    if (::umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW) == 0) return Unmount::Done;
    if (errno == EBUSY) return Unmount::Busy;
    if (errno == EINVAL) {
        log::info("{} was unmounted by someone else", mountpoint.native());  // in use or not: its superblock says
        return Unmount::NotMounted;
    }
    log::error("cannot unmount {}: {}", mountpoint.native(), std::strerror(errno));
    return Unmount::Failed;
}

void detach(const std::filesystem::path& mountpoint) {
    if (::umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW | MNT_DETACH) != 0) {
        log::error("cannot detach {}: {}", mountpoint.native(), std::strerror(errno));
        return;
    }
    log::info("{} busy: detached; serving the files still open there", mountpoint.native());
}

size_t dropPageCache(const std::filesystem::path& root) {
    struct stat top {};
    if (::stat(root.c_str(), &top) != 0) return 1;
    size_t failed = 0;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(root, ec); !ec && it != std::filesystem::end(it);
         it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0) {
            ++failed;
            continue;
        }
        // Only this file system's pages: not into a mount below it.
        if (st.st_dev != top.st_dev) {
            it.disable_recursion_pending();
            continue;
        }
        if (!S_ISREG(st.st_mode)) continue;
        rafs::UniqueFd fd(::open(it->path().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
        if (fd.get() < 0 || ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED) != 0) ++failed;
    }
    return failed + (ec ? 1 : 0);
}

}  // namespace rafsd
