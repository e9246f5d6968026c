#include "daemon/api/LocalBootstrap.h"

#include "format/Digest.h"
#include "format/FileIo.h"
#include "daemon/api/MountInfo.h"
#include "daemon/core/DiskUsage.h"
#include "daemon/core/DurableFile.h"
#include "format/Error.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <string>

namespace rafsd {

namespace fs = std::filesystem;

namespace {
constexpr std::string_view kSuffix = ".boot";
}  // namespace

fs::path extractBootstrap(const rafs::Bootstrap& bootstrap, const fs::path& cache_dir) {
    const fs::path path =
        cache_dir / (rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bootstrap.bytes())) + std::string(kSuffix));
    // Reused only if it holds the bootstrap: a file damaged under this name is written again.
    if (fs::exists(path)) {
        const std::string kept = rafs::readFile(path.string(), bootstrap.bytes().size() + 1);
        if (std::equal(kept.begin(), kept.end(), bootstrap.bytes().begin(), bootstrap.bytes().end())) {
            renewLastUse(path);
            return path;
        }
    }
    replaceFileSynced(path, bootstrap.bytes());
    return path;
}

std::vector<UnusedCache> ExtractedBootstraps::list(const std::set<std::string>&) {
    // By inode: a mount's source is the path as the mounting process spelled it.
    std::set<std::pair<dev_t, ino_t>> mounted;
    for (const std::string& source : erofsMountSources()) {
        struct stat st {};
        if (::stat(source.c_str(), &st) == 0) mounted.emplace(st.st_dev, st.st_ino);
    }
    const int64_t recent = std::time(nullptr) - keep_recent_.count();
    std::vector<UnusedCache> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        const fs::path path = it->path();
        const std::string name = path.filename().string();
        if (!name.ends_with(kSuffix) || name.size() == kSuffix.size()) continue;
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_mtim.tv_sec > recent ||
            mounted.count({st.st_dev, st.st_ino}) != 0) {
            continue;
        }
        out.push_back({"extracted bootstrap " + name, uint64_t(st.st_blocks) * 512, st.st_mtim.tv_sec, [path] {
                           if (::unlink(path.c_str()) != 0 && errno != ENOENT) rafs::failErrno("cannot remove " + path.string());
                       }});
    }
    if (ec && ec != std::errc::no_such_file_or_directory) rafs::fail("cannot list {}: {}", dir_.string(), ec.message());
    return out;
}

}  // namespace rafsd
