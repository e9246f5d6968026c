#include "daemon/core/BlobCacheFiles.h"

#include "format/Error.h"
#include "format/FileLock.h"
#include "format/UniqueFd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <map>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

// The chunk map first: without it nothing claims the data, whatever a crash leaves of the rest.
constexpr std::array<std::string_view, 3> kSuffixes = {".chunkmap", BlobCacheFiles::kDataSuffix, ".blob.meta"};

std::string idOf(const std::string& key) {
    const size_t slash = key.rfind('/');
    return slash == std::string::npos ? key : key.substr(slash + 1);
}

// The lock on a blob's chunk map, which ReadinessBitmap holds while the blob is served (another
// rafsd on the same cache dir); throws Error if another process holds it. No fd if there is no map.
rafs::UniqueFd lockChunkMap(const fs::path& dir, const std::string& id) {
    const fs::path chunkmap = dir / (id + ".chunkmap");
    // Read-write, as ReadinessBitmap opens it: on NFS only such a file takes an exclusive lock.
    rafs::UniqueFd fd(::open(chunkmap.c_str(), O_RDWR | O_CLOEXEC));
    if (fd.get() < 0) return fd;
    const auto outcome = rafs::lockExclusive(fd.get(), std::chrono::steady_clock::now(), chunkmap.string());
    if (outcome == rafs::LockOutcome::TimedOut) {
        rafs::fail("{} is locked by another process serving the blob", chunkmap.string());
    }
    if (outcome == rafs::LockOutcome::Unsupported) {
        rafs::fail("{}: its file system cannot lock it, so whether another process serves the blob is unknown",
                   chunkmap.string());
    }
    return fd;
}

// Removes a blob's files unless another process serves it (lockChunkMap).
void removeBlob(const fs::path& dir, const std::string& id) {
    const rafs::UniqueFd locked = lockChunkMap(dir, id);
    for (std::string_view suffix : kSuffixes) {
        const fs::path path = dir / (id + std::string(suffix));
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) rafs::failErrno(fmt::format("cannot remove {}", path.string()));
    }
}

}  // namespace

std::vector<UnusedCache> BlobCacheFiles::list(const std::set<std::string>& in_use) {
    std::set<std::string> used;
    for (const std::string& key : in_use) used.insert(idOf(key));
    std::map<std::string, UnusedCache> blobs;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        for (std::string_view suffix : kSuffixes) {
            if (!name.ends_with(suffix) || name.size() == suffix.size()) continue;
            const std::string id = name.substr(0, name.size() - suffix.size());
            if (used.count(id) != 0) break;
            struct stat st {};
            if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) break;
            UnusedCache& blob = blobs[id];
            blob.name = "blob " + id;
            blob.bytes += uint64_t(st.st_blocks) * 512;
            blob.last_use = std::max<int64_t>(blob.last_use, st.st_mtim.tv_sec);
            blob.remove = [dir = dir_, id] { removeBlob(dir, id); };
            blob.check = [dir = dir_, id] { lockChunkMap(dir, id); };
            break;
        }
    }
    if (ec && ec != std::errc::no_such_file_or_directory) rafs::fail("cannot list {}: {}", dir_.string(), ec.message());
    std::vector<UnusedCache> out;
    for (auto& [id, blob] : blobs) out.push_back(std::move(blob));
    return out;
}

}  // namespace rafsd
