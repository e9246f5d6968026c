#include "registry/LayoutLock.h"

#include "format/Error.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

namespace fs = std::filesystem;

namespace registry {

namespace {

// A writer that failed may remove a directory it created while another waits for its lock: the
// waiter then holds a lock on a directory no longer at the path, and starts again.
constexpr int kAttempts = 8;

bool sameFile(int fd, const fs::path& path) {
    struct stat held{}, named{};
    return ::fstat(fd, &held) == 0 && ::stat(path.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
           held.st_ino == named.st_ino;
}

}  // namespace

LayoutLock::LayoutLock(const fs::path& dir, const std::function<void()>& waiting) {
    bool told = false;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
        std::error_code ec;
        if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
        bool made = ::mkdir(dir.c_str(), 0755) == 0;
        if (!made && errno != EEXIST) rafs::failErrno(fmt::format("oci:{}: cannot create", dir.string()));
        rafs::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (fd.get() < 0) {
            if (errno == ENOENT) continue;
            rafs::failErrno(fmt::format("oci:{}: cannot open", dir.string()));
        }
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK) rafs::failErrno(fmt::format("oci:{}: flock", dir.string()));
            if (!told && waiting) waiting();
            told = true;
            while (::flock(fd.get(), LOCK_EX) != 0) {
                if (errno != EINTR) rafs::failErrno(fmt::format("oci:{}: flock", dir.string()));
            }
        }
        if (!sameFile(fd.get(), dir)) continue;
        // Made here but filled by a writer that locked it first: that writer's now.
        created_ = made && fs::is_empty(dir, ec) && !ec;
        fd_ = std::move(fd);
        return;
    }
    rafs::fail("oci:{}: it was removed and made again {} times while waiting for its lock", dir.string(), kAttempts);
}

}  // namespace registry
