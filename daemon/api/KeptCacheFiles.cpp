#include "daemon/api/KeptCacheFiles.h"

#include "daemon/backends/BlobId.h"
#include "daemon/core/BlobCacheFiles.h"
#include "daemon/core/Log.h"
#include "format/Error.h"
#include "format/FileIo.h"

#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <string_view>

namespace rafsd {

namespace {

constexpr std::string_view kPrefix = "c";
constexpr std::string_view kOldPrefix = "blob-";  // "blob-<blob id>", before identity names
constexpr std::string_view kDeleted = " (deleted)";  // proc(5): an fd's link once its file is removed

// Whether `name` is one a cache file is kept under, in either form.
bool isCacheFileName(const std::string& name) {
    if (name.starts_with(kOldPrefix)) return true;
    if (!name.starts_with(kPrefix) || name.size() < kPrefix.size() + 3) return false;
    const std::string_view rest = std::string_view(name).substr(kPrefix.size());
    const size_t dash = rest.find('-');
    if (dash == 0 || dash == std::string_view::npos || dash + 1 == rest.size()) return false;
    return rest.find_first_not_of("0123456789abcdef-") == std::string_view::npos &&
           rest.find('-', dash + 1) == std::string_view::npos;
}

// The blob whose cache file `fd` was opened as, from its path: "<blob id>.blob.data".
std::optional<std::string> blobOfFd(int fd) {
    std::optional<std::string> named = rafs::pathOfFd(fd);
    if (!named) return std::nullopt;
    std::string path = std::move(*named);
    if (path.ends_with(kDeleted)) path.resize(path.size() - kDeleted.size());
    std::string name = std::filesystem::path(path).filename().string();
    if (!name.ends_with(BlobCacheFiles::kDataSuffix)) return std::nullopt;
    name.resize(name.size() - BlobCacheFiles::kDataSuffix.size());
    try {
        checkBlobId(name);
    } catch (const rafs::Error&) {
        return std::nullopt;
    }
    return name;
}

// Whether two fds are open on the same file (false if either cannot be stat'ed).
bool sameFile(int a, int b) {
    struct stat sa{}, sb{};
    return a >= 0 && b >= 0 && ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

}  // namespace

std::string KeptCacheFiles::nameOf(int fd) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) rafs::failErrno("cannot stat a cache file to keep it");
    return fmt::format("{}{:x}-{:x}", kPrefix, static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_dev));
}

KeptCacheFiles::KeptCacheFiles(KeptFds& kept) : kept_(kept) {
    for (const std::string& name : kept_.names()) {
        if (!isCacheFileName(name)) continue;
        std::optional<std::string> blob = blobOfFd(kept_.find(name));
        // An old name says it too, if the path no longer does.
        if (!blob && name.starts_with(kOldPrefix)) blob = name.substr(kOldPrefix.size());
        if (!blob) {
            log::warn("kept fd {}: not a blob's cache file (its path names none); left kept", name);
            continue;
        }
        if (const auto [it, added] = names_.emplace(*blob, name); !added) {
            if (sameFile(kept_.find(it->second), kept_.find(name))) {
                kept_.drop(name);  // a second name of one file only takes room in LISTEN_FDNAMES
            } else {
                log::warn("kept fds {} and {} both hold blob {}; {} is used", it->second, name, *blob, it->second);
            }
        }
    }
}

int KeptCacheFiles::find(const std::string& blob_id) const {
    const auto it = names_.find(blob_id);
    return it == names_.end() ? -1 : kept_.find(it->second);
}

void KeptCacheFiles::keep(const std::string& blob_id, int fd) {
    const std::string name = nameOf(fd);
    const auto it = names_.find(blob_id);
    if (it != names_.end()) {
        // Kept already, maybe under its old name: systemd's fd store would ignore the same file
        // under a second name, and then the removal of the first would lose it.
        if (it->second == name || sameFile(kept_.find(it->second), fd)) return;
        kept_.drop(it->second);
        names_.erase(it);
    }
    kept_.keep(name, fd);
    names_[blob_id] = name;
}

void KeptCacheFiles::drop(const std::string& blob_id) {
    const auto it = names_.find(blob_id);
    if (it == names_.end()) return;
    kept_.drop(it->second);
    names_.erase(it);
}

std::vector<std::string> KeptCacheFiles::blobIds() const {
    std::vector<std::string> out;
    for (const auto& [blob, name] : names_) out.push_back(blob);
    return out;
}

}  // namespace rafsd
