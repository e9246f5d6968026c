#include "builder/commands/RunDirectory.h"

#include "format/Error.h"
#include "format/FileLock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <system_error>

namespace fs = std::filesystem;

namespace rafs::build {

namespace {

constexpr std::string_view kTemplateSuffix = "XXXXXX";
constexpr auto kMinimumAge = std::chrono::minutes(1);

// One try, no wait.
LockOutcome tryLock(int fd, std::string_view what) {
    return lockExclusive(fd, std::chrono::steady_clock::time_point{}, what);
}

}  // namespace

RunDirectory::RunDirectory(const fs::path& parent, std::string_view prefix, std::string_view what) {
    std::string templ = (parent / (std::string(prefix) + std::string(kTemplateSuffix))).string();
    const auto hold = holdInterrupts();
    if (::mkdtemp(templ.data()) == nullptr) failErrno(fmt::format("cannot create a {} in {}", what, parent.string()));
    dir_.emplace(templ);
    lock_ = UniqueFd(::open(templ.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (lock_.get() < 0) failErrno("cannot open " + templ);
    // Where flock cannot be taken so (NFS: Unsupported), the directory goes unlocked, and
    // removeAbandonedRunDirectories leaves such ones alone.
    if (tryLock(lock_.get(), templ) == LockOutcome::TimedOut) fail("cannot lock {}: another process holds it", templ);
}

void removeAbandonedRunDirectories(const fs::path& parent, std::string_view prefix, std::ostream& log) {
    std::error_code ec;
    const auto now = fs::file_time_type::clock::now();
    for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.starts_with(prefix) || name.size() != prefix.size() + kTemplateSuffix.size()) continue;
        std::error_code entry_ec;
        if (!it->is_directory(entry_ec) || it->is_symlink(entry_ec)) continue;
        const auto changed = fs::last_write_time(it->path(), entry_ec);
        if (entry_ec || now - changed < kMinimumAge) continue;
        const UniqueFd fd(::open(it->path().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (fd.get() < 0) continue;
        // Only this user's, and still the directory locked below when it is removed by path (in
        // a shared, world-writable parent such as /var/tmp).
        struct stat opened {};
        struct stat named {};
        if (::fstat(fd.get(), &opened) != 0 || opened.st_uid != ::geteuid()) continue;
        try {
            if (tryLock(fd.get(), it->path().string()) != LockOutcome::Locked) continue;  // in use, or unknowable
        } catch (const Error&) {
            continue;  // flock failed otherwise: not ours to judge
        }
        if (::lstat(it->path().c_str(), &named) != 0 || named.st_dev != opened.st_dev || named.st_ino != opened.st_ino) {
            continue;
        }
        const auto removed = fs::remove_all(it->path(), entry_ec);
        if (entry_ec) {
            log << fmt::format("cannot remove {}, left by a run that did not end: {}\n", it->path().string(),
                               entry_ec.message());
        } else {
            log << fmt::format("removed {}, left by a run that did not end ({} files)\n", it->path().string(), removed);
        }
    }
}

}  // namespace rafs::build
