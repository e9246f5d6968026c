#include "daemon/engines/fscache/FscacheDevice.h"

#include "daemon/engines/KernelRelease.h"

#include "format/Error.h"
#include "daemon/core/Log.h"
#include "format/UniqueFd.h"
#include "daemon/core/CloseOrWarn.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <cstring>
#include <utility>

namespace rafsd {

namespace fs = std::filesystem;
using rafs::fail;

void checkCacheFilesystem(const fs::path& dir) {
    struct statfs st {};
    if (::statfs(dir.c_str(), &st) != 0) rafs::failErrno("statfs " + dir.string());
    // cachefiles needs user xattrs, O_TMPFILE, direct I/O, SEEK_DATA and sync_fs: the local
    // disk file systems it is tested on have them; tmpfs, 9p, overlayfs, NFS and FUSE do not all.
    const auto type = static_cast<unsigned long>(st.f_type);
    switch (type) {
    case EXT4_SUPER_MAGIC:
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case F2FS_SUPER_MAGIC: return;
    default:
        fail("cache dir {} is on a file system (type 0x{:x}) cachefiles cannot use; put it on ext4, xfs or btrfs",
             dir.string(), type);
    }
}

FscacheDevice FscacheDevice::open(const fs::path& cache_dir, std::string_view tag) {
    std::error_code ec;
    fs::create_directories(cache_dir, ec);
    if (ec) fail("cannot create cache dir {}: {}", cache_dir.string(), ec.message());
    checkCacheFilesystem(cache_dir);
    const int fd = ::open(kPath, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        if (err == ENOENT || err == ENXIO || err == ENODEV) {
            fail("{}: CONFIG_CACHEFILES missing or module not loaded (modprobe cachefiles)", kPath);
        }
        if (err == EBUSY) {
            fail("{}: busy: another cachefiles daemon holds it, or a dead daemon's cache is not released yet "
                 "(unmount its EROFS mounts)",
                 kPath);
        }
        rafs::failErrno(std::string("open ") + kPath, err);
    }
    FscacheDevice device(fd);
    device.command("dir " + cache_dir.string());
    device.command(std::string("tag ").append(tag));
    const std::string_view bind = "bind ondemand";
    if (::write(fd, bind.data(), bind.size()) != static_cast<ssize_t>(bind.size())) {
        const int err = errno;
        if (err == EINVAL) fail("{}: 'bind ondemand' refused: kernel without CONFIG_CACHEFILES_ONDEMAND", kPath);
        rafs::failErrno(std::string(kPath) + ": bind ondemand", err);
    }
    log::info("cachefiles bound on {} (tag {}, on-demand mode)", cache_dir.string(), tag);
    return device;
}

FscacheDevice::~FscacheDevice() {
    if (fd_ >= 0) closeOrWarn(fd_, kPath);
}

FscacheDevice::FscacheDevice(FscacheDevice&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

void FscacheDevice::command(std::string_view text) {
    const ssize_t n = ::write(fd_, text.data(), text.size());
    if (n < 0) rafs::failErrno(std::string(kPath) + ": " + std::string(text));
    if (static_cast<size_t>(n) != text.size()) fail("{}: {}: short write", kPath, text);
}

void FscacheDevice::restore() {
    constexpr std::string_view text = "restore";
    if (::write(fd_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
        const int err = errno;
        if (err == EOPNOTSUPP) {
            const std::string why = lacksRestore();
            fail("{}: 'restore' refused{}", kPath, why.empty() ? " (not in on-demand mode?)" : ": " + why);
        }
        rafs::failErrno(std::string(kPath) + ": restore", err);
    }
}

std::string FscacheDevice::lacksRestore() {
    const KernelRelease kernel = KernelRelease::running();
    if (kernel.atLeast(6, 8)) return {};
    bool listed = false;  // any cachefiles function
    std::ifstream symbols("/proc/kallsyms");
    for (std::string line; std::getline(symbols, line);) {
        // "ffffffffc0a1b2c0 t cachefiles_ondemand_restore\t[cachefiles]"
        const size_t name = line.find(' ', line.find(' ') + 1) + 1;
        if (name == 0 || line.compare(name, 11, "cachefiles_") != 0) continue;
        listed = true;
        const std::string_view rest = std::string_view(line).substr(name);
        if (rest == "cachefiles_ondemand_restore" || rest.starts_with("cachefiles_ondemand_restore\t")) return {};
    }
    if (!listed) {
        return fmt::format("this kernel ({}) is older than Linux 6.8, which brought cachefiles' 'restore', and its "
                           "symbol table does not say whether it has it backported",
                           kernel.text);
    }
    return fmt::format("this kernel ({}) has no cachefiles 'restore' (Linux 6.8, or backported to an earlier one)",
                       kernel.text);
}

void FscacheDevice::copen(uint32_t msg_id, int64_t size_or_error) {
    command(fmt::format("copen {},{}", msg_id, size_or_error));
}

}  // namespace rafsd
