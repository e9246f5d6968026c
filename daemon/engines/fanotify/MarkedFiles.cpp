#include "daemon/engines/fanotify/MarkedFiles.h"

#include "format/Error.h"
#include "daemon/core/Log.h"
#include "format/UniqueFd.h"
#include "daemon/core/CloseOrWarn.h"
#include "daemon/engines/fanotify/FanotifyGroup.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace rafsd {

using rafs::fail;
using rafs::failErrno;

MarkedFiles::FileKey MarkedFiles::keyOf(int fd, const std::string& name) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) failErrno(fmt::format("cannot stat cache file {}", name));
    if (!S_ISREG(st.st_mode)) fail("cache file {} is not a regular file", name);
    return {st.st_dev, st.st_ino};
}

MarkedFiles::~MarkedFiles() {
    for (const auto& [key, file] : files_) closeOrWarn(file.fd, file.path.native());
}

bool MarkedFiles::add(const FanotifyMount& m, bool reattach) {
    Mount entry{m.image, m.mountpoint.lexically_normal(), {}};
    bool deferred = false;
    std::lock_guard lock(mutex_);
    for (const Mount& other : mounts_) {
        if (other.mountpoint == entry.mountpoint) fail("{} is already mounted", entry.mountpoint.native());
    }
    try {
        // Complete files too: a file the mount opens unmarked never raises events (the open
        // decides), so its chunks could never be freed; the engine unmarks them after the mount
        // unless the cache collector may free them (FanotifyMount::keep_marks).
        for (const FanotifyBlobFile& blob : m.blobs) acquire(blob, m.image, entry.files);
        const auto traced_until = std::chrono::steady_clock::now() + m.traced_complete_for;
        for (const auto& [blob, key] : entry.files) {
            File& file = files_.at(key);
            file.marked_until = std::max(file.marked_until, traced_until);
        }
        if (reattach && !m.keep_marks) {
            for (const auto& [blob, key] : entry.files) {
                File& file = files_.at(key);
                const bool complete = std::any_of(m.blobs.begin(), m.blobs.end(), [&](const FanotifyBlobFile& b) {
                    return b.blob == blob && b.complete;
                });
                if (complete && file.marked) deferred = unmarkOrDefer(file) || deferred;
            }
        }
    } catch (...) {
        release(m.image, entry.files);
        throw;
    }
    mounts_.push_back(std::move(entry));
    return deferred;
}

void MarkedFiles::acquire(const FanotifyBlobFile& blob, uint32_t image, std::vector<std::pair<uint32_t, FileKey>>& files) {
    const FileKey key = keyOf(blob.fd, blob.path.native());
    const auto it = files_.find(key);
    if (it == files_.end()) {
        rafs::UniqueFd fd = rafs::UniqueFd::duplicate(blob.fd, blob.path.native());
        markPreAccess(group_, fd.get(), blob.path);
        files_.emplace(key, File{blob.path, fd.release(), blob.size, true, {{image, blob.blob}}});
    } else {
        if (!it->second.marked) {
            markPreAccess(group_, it->second.fd, it->second.path);
            it->second.marked = true;
        }
        it->second.users.emplace_back(image, blob.blob);
    }
    files.emplace_back(blob.blob, key);
}

// Logs rather than throws: it runs on rollback and after an unmount.
void MarkedFiles::release(uint32_t image, const std::vector<std::pair<uint32_t, FileKey>>& files) {
    for (const auto& [blob, key] : files) {
        const auto it = files_.find(key);
        File& file = it->second;
        file.users.erase(std::find(file.users.begin(), file.users.end(), std::pair{image, blob}));
        if (!file.users.empty()) continue;
        if (file.marked) {
            if (const int err = unmarkPreAccess(group_, file.fd); err != 0) {
                log::warn("cannot unmark cache file {}: {}", file.path.native(), std::strerror(err));
            }
        }
        closeOrWarn(file.fd, file.path.native());
        if (file.unmark_deferred) --deferred_;
        files_.erase(it);
    }
}

void MarkedFiles::remove(const std::filesystem::path& mountpoint) {
    const std::filesystem::path normal = mountpoint.lexically_normal();
    std::lock_guard lock(mutex_);
    const auto it = std::find_if(mounts_.begin(), mounts_.end(), [&](const Mount& e) { return e.mountpoint == normal; });
    if (it == mounts_.end()) fail("{} is not mounted by rafsd", normal.native());
    release(it->image, it->files);
    mounts_.erase(it);
}

void MarkedFiles::rename(const std::filesystem::path& from, const std::filesystem::path& to) {
    const std::filesystem::path normal = from.lexically_normal();
    std::lock_guard lock(mutex_);
    const auto named = [&](const std::filesystem::path& p) {
        return std::find_if(mounts_.begin(), mounts_.end(), [&](const Mount& e) { return e.mountpoint == p; });
    };
    const auto it = named(normal);
    if (it == mounts_.end()) fail("{} is not mounted by rafsd", normal.native());
    if (named(to) != mounts_.end()) fail("{} is in rafsd's table already", to.native());
    it->mountpoint = to;
}

bool MarkedFiles::has(const std::filesystem::path& mountpoint) const {
    const std::filesystem::path normal = mountpoint.lexically_normal();
    std::lock_guard lock(mutex_);
    return std::any_of(mounts_.begin(), mounts_.end(), [&](const Mount& e) { return e.mountpoint == normal; });
}

std::vector<std::filesystem::path> MarkedFiles::mountpoints() const {
    std::lock_guard lock(mutex_);
    std::vector<std::filesystem::path> out;
    for (const Mount& m : mounts_) out.push_back(m.mountpoint);
    return out;
}

std::optional<MarkedFiles::Served> MarkedFiles::find(FileKey key) const {
    std::lock_guard lock(mutex_);
    const auto it = files_.find(key);
    if (it == files_.end()) return std::nullopt;
    return Served{it->second.users.front().first, it->second.users.front().second, it->second.size};
}

std::vector<std::pair<MarkedFiles::FileKey, MarkedFiles::Served>> MarkedFiles::all() const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<FileKey, Served>> out;
    for (const auto& [key, file] : files_) {
        out.emplace_back(key, Served{file.users.front().first, file.users.front().second, file.size});
    }
    return out;
}

std::vector<MarkedFiles::MountFile> MarkedFiles::filesOf(const std::filesystem::path& mountpoint) const {
    const std::filesystem::path normal = mountpoint.lexically_normal();
    std::lock_guard lock(mutex_);
    std::vector<MountFile> out;
    for (const Mount& m : mounts_) {
        if (m.mountpoint != normal) continue;
        for (const auto& [blob, key] : m.files) {
            const File& file = files_.at(key);
            out.push_back({file.path, {m.image, blob, file.size}});
        }
    }
    return out;
}

void MarkedFiles::unmark(File& file) {
    // ENOENT: the mark is gone already (a complete file a dead worker unmarked).
    if (const int err = unmarkPreAccess(group_, file.fd); err != 0 && err != ENOENT) {
        failErrno(fmt::format("cannot unmark cache file {}", file.path.native()), err);
    }
    file.marked = false;
}

bool MarkedFiles::unmarkOrDefer(File& file) {
    if (std::chrono::steady_clock::now() >= file.marked_until) {
        unmark(file);
        return false;
    }
    if (file.unmark_deferred) return false;
    file.unmark_deferred = true;
    ++deferred_;
    return true;
}

bool MarkedFiles::unmarkComplete(int fd) {
    const FileKey key = keyOf(fd, fmt::format("(fd {})", fd));
    std::lock_guard lock(mutex_);
    const auto it = files_.find(key);
    return it != files_.end() && it->second.marked && unmarkOrDefer(it->second);
}

std::optional<std::chrono::steady_clock::time_point> MarkedFiles::unmarkDeferred() {
    if (deferred_.load() == 0) return std::nullopt;
    const auto now = std::chrono::steady_clock::now();
    std::optional<std::chrono::steady_clock::time_point> next;
    std::lock_guard lock(mutex_);
    for (auto& [key, file] : files_) {
        if (!file.unmark_deferred) continue;
        if (file.marked && now < file.marked_until) {
            next = next ? std::min(*next, file.marked_until) : file.marked_until;
            continue;
        }
        file.unmark_deferred = false;
        --deferred_;
        if (!file.marked) continue;
        try {
            unmark(file);
        } catch (const std::exception& e) {
            log::warn("{}; its reads keep raising events", e.what());
        }
    }
    return next;
}

}  // namespace rafsd
