#include "registry/LayoutLock.h"

#include "format/Error.h"
#include "format/FileLock.h"

#include <fcntl.h>
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
    const std::string name = "oci:" + dir.string();
    bool told = false;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
        std::error_code ec;
        if (dir.has_parent_path()) {
            fs::create_directories(dir.parent_path(), ec);
            if (ec) rafs::fail("{}: cannot create {}: {}", name, dir.parent_path().string(), ec.message());
        }
        const bool made = ::mkdir(dir.c_str(), 0755) == 0;
        if (!made && errno != EEXIST) rafs::failErrno(fmt::format("{}: cannot create", name));
        rafs::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (fd.get() < 0) {
            const int err = errno;
            if (err == ENOENT && fs::is_symlink(dir, ec)) rafs::fail("{}: a symbolic link to nothing", name);
            if (err == ENOENT) continue;  // removed since
            rafs::failErrno(fmt::format("{}: cannot open", name), err);
        }
        // A directory made here and left empty by a failure below stays: removing it without
        // the lock could pull it from under a writer that just locked it.
        rafs::LockOutcome outcome = rafs::lockExclusive(fd.get(), std::chrono::steady_clock::now(), name);
        if (outcome == rafs::LockOutcome::TimedOut) {
            if (!told && waiting) waiting();
            told = true;
            outcome = rafs::lockExclusive(fd.get(), std::nullopt, name);
        }
        if (!sameFile(fd.get(), dir)) continue;
        locked_ = outcome == rafs::LockOutcome::Locked;
        // Made here but filled by a writer that locked it first: that writer's now.
        created_ = made && fs::is_empty(dir, ec) && !ec;
        fd_ = std::move(fd);
        return;
    }
    rafs::fail("{}: it was removed and made again {} times while waiting for its lock", name, kAttempts);
}

}  // namespace registry
