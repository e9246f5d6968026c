#include "daemon/engines/fanotify/FanotifyGroup.h"

#include "daemon/engines/KernelRelease.h"
#include "format/Error.h"
#include "kernel-abi/fanotify.h"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <cerrno>
#include <fstream>
#include <string>

namespace rafsd {

namespace {

using rafs::fail;
using rafs::failErrno;

int initGroup(unsigned flags) {
    // Event fds are only fstat'ed and closed: the core writes through its own pre-mark fd.
    const int fd = ::fanotify_init(flags, O_RDONLY | O_LARGEFILE);
    if (fd >= 0) return fd;
    if (errno == EINVAL) {
        fail("kernel lacks fanotify pre-content events (Linux 6.14+ with "
             "CONFIG_FANOTIFY_ACCESS_PERMISSIONS)");
    }
    if (errno == EPERM) fail("fanotify pre-content events need CAP_SYS_ADMIN");
    if (errno == ENOSYS) fail("kernel lacks fanotify (CONFIG_FANOTIFY)");
    failErrno("fanotify_init");
}

// fanotify_init takes FAN_CLASS_PRE_CONTENT since 2.6.37, but the pre-content events themselves
// came with Linux 6.14. A mark for one on a memfd tells: shmem has none, and a kernel that knows
// the event refuses that mark with EOPNOTSUPP (6.18), one that does not with EINVAL, an unknown
// mask bit (fanotify_mark and fanotify_events_supported in fs/notify/fanotify/fanotify_user.c).
// 6.14's first patches also said EINVAL for a file system without them, and a security module may
// refuse the probe: there the release decides.
void checkPreAccessEvent(int group) {
    const rafs::UniqueFd probe(::memfd_create("rafsd-pre-access-probe", MFD_CLOEXEC));
    if (probe.get() >= 0 && ::fanotify_mark(group, fanotify::kMarkAdd, fanotify::kPreAccess, probe.get(), nullptr) == 0) {
        (void)::fanotify_mark(group, fanotify::kMarkRemove, fanotify::kPreAccess, probe.get(), nullptr);  // or at close
        return;
    }
    if (probe.get() >= 0 && errno == EOPNOTSUPP) return;
    const KernelRelease kernel = KernelRelease::running();
    if (kernel.atLeast(6, 14)) return;
    fail("kernel {} lacks fanotify pre-content events (Linux 6.14+)", kernel.text);
}

}  // namespace

rafs::UniqueFd createPreContentGroup() {
    // An unlimited queue: a permission event that does not fit is dropped and its read goes on
    // unfilled. Unlimited marks: one mark per incomplete blob of every mounted image.
    rafs::UniqueFd group(initGroup(fanotify::kClassPreContent | fanotify::kCloexec | fanotify::kNonblock |
                                   fanotify::kUnlimitedQueue | fanotify::kUnlimitedMarks));
    checkPreAccessEvent(group.get());
    return group;
}

void checkPreContentKernel() {
    checkPreAccessEvent(rafs::UniqueFd(initGroup(fanotify::kClassPreContent | fanotify::kCloexec)).get());
    std::ifstream in("/proc/filesystems");
    if (!in) fail("cannot read /proc/filesystems");
    std::string line;
    while (std::getline(in, line)) {
        if (line.ends_with("\terofs")) return;
    }
    fail("kernel has no EROFS: /proc/filesystems lacks erofs (CONFIG_EROFS_FS, or load the erofs module)");
}

void raiseFdLimit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) failErrno("getrlimit(RLIMIT_NOFILE)");
    if (limit.rlim_cur == limit.rlim_max) return;
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) failErrno("setrlimit(RLIMIT_NOFILE)");
}

void markPreAccess(int group, int fd, const std::filesystem::path& path) {
    if (::fanotify_mark(group, fanotify::kMarkAdd, fanotify::kPreAccess, fd, nullptr) == 0) return;
    // EOPNOTSUPP on 6.18 (tmpfs); the 6.14 patches returned EINVAL.
    if (errno == EOPNOTSUPP || errno == EINVAL) {
        fail("cannot watch cache file {}: its file system has no fanotify pre-content events "
             "(ext4, xfs or btrfs needed)",
             path.native());
    }
    failErrno(fmt::format("cannot mark cache file {}", path.native()));
}

int unmarkPreAccess(int group, int fd) {
    return ::fanotify_mark(group, fanotify::kMarkRemove, fanotify::kPreAccess, fd, nullptr) == 0 ? 0 : errno;
}

}  // namespace rafsd
