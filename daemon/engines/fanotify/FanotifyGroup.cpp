#include "daemon/engines/fanotify/FanotifyGroup.h"

#include "format/Error.h"
#include "kernel-abi/fanotify.h"

#include <fcntl.h>
#include <sys/fanotify.h>
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

}  // namespace

rafs::UniqueFd createPreContentGroup() {
    // An unlimited queue: a permission event that does not fit is dropped and its read goes on
    // unfilled. Unlimited marks: one mark per incomplete blob of every mounted image.
    return rafs::UniqueFd(initGroup(fanotify::kClassPreContent | fanotify::kCloexec | fanotify::kNonblock |
                              fanotify::kUnlimitedQueue | fanotify::kUnlimitedMarks));
}

void checkPreContentKernel() {
    rafs::UniqueFd(initGroup(fanotify::kClassPreContent | fanotify::kCloexec));
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
