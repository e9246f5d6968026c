#include "daemon/engines/fscache/FscacheVolumes.h"

#include "format/Error.h"
#include "daemon/core/DiskUsage.h"
#include "daemon/core/Log.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <set>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

// cachefiles names a volume's dir "I" + its key (fs/cachefiles/volume.c), and EROFS's volume key
// is "erofs,<name>" (fs/erofs/fscache.c).
constexpr std::string_view kVolumePrefix = "Ierofs,";
constexpr std::string_view kKeyPrefix = "fscache:";

fs::path volumeDir(const fs::path& bound, std::string_view volume_key) {
    return bound / "cache" / fmt::format("I{}", volume_key);
}

// cachefiles names the file of a printable cookie key "D" + the key (fs/cachefiles/key.c).
std::string cacheFileName(std::string_view cookie_key) { return fmt::format("D{}", cookie_key); }

}  // namespace

std::vector<UnusedCache> FscacheVolumes::list(const std::set<std::string>& in_use) {
    std::set<std::string> used;
    for (const std::string& key : in_use) {
        if (!key.starts_with(kKeyPrefix)) continue;
        const size_t slash = key.find('/', kKeyPrefix.size());
        used.insert(key.substr(kKeyPrefix.size(), slash - kKeyPrefix.size()));
    }
    std::vector<UnusedCache> out;
    std::error_code ec;
    for (fs::directory_iterator it(bound_ / "cache", ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.starts_with(kVolumePrefix) || !it->is_directory()) continue;
        const std::string volume = name.substr(kVolumePrefix.size());
        if (used.count(volume) != 0) continue;
        const DiskUsage files = DiskUsage::of(it->path());
        const DiskUsage state = DiskUsage::of(state_ / volume);
        // Its 256 fan-out dirs (about 1 MiB) too: they stay when its files are culled, and a mount by
        // hand of an fsid nobody registered leaves them.
        out.push_back({"fscache volume " + volume, files.bytes + files.directory_bytes + state.bytes,
                       std::max(files.last_write, state.last_write), [this, volume] { remove(volume); }});
    }
    return out;
}

uint64_t FscacheVolumes::unlistedBytes() {
    uint64_t bytes = 0;
    // By volume key: the names of the cache files linked in; none if the dir could not be read,
    // whose objects then count as linked (counted twice, they would make collections free space
    // for nothing).
    std::map<std::string, std::optional<std::set<std::string>>> linked;
    for (const auto& [key, data] : engine_.openObjectData()) {
        const auto [volume, first] = linked.try_emplace(key.first);
        if (first) {
            const fs::path dir = volumeDir(bound_, key.first);
            std::set<std::string> names;
            std::error_code ec;
            for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
                names.insert(it->path().filename().string());
            if (!ec || ec == std::errc::no_such_file_or_directory) {
                volume->second = std::move(names);
            } else {
                log::warn("cache size: cannot list {}: {}; its open cache files are not counted", dir.string(),
                          ec.message());
            }
        }
        if (volume->second && volume->second->count(cacheFileName(key.second)) == 0) bytes += data;
    }
    return bytes;
}

void FscacheVolumes::remove(const std::string& volume) {
    const fs::path dir = volumeDir(bound_, "erofs," + volume);
    uint32_t busy = 0;
    for (const fs::directory_entry& fanout : fs::directory_iterator(dir)) {
        if (!fanout.is_directory()) continue;
        for (const fs::directory_entry& file : fs::directory_iterator(fanout.path())) {
            try {
                engine_.cull(fanout.path(), file.path().filename().string());
            } catch (const rafs::SystemError& e) {
                if (e.code() != EBUSY) throw;
                ++busy;
            }
        }
    }
    emptyGraveyard();
    if (busy != 0) rafs::fail("{} cache files of fscache volume {} are open in the kernel", busy, volume);
    // Only now: a chunk map left behind a cache file would be checked again at the next open,
    // but one without its cache file is just lost state.
    std::error_code ec;
    fs::remove_all(state_ / volume, ec);
    if (ec) rafs::fail("cannot remove {}: {}", (state_ / volume).string(), ec.message());
    // Then its directories, one rmdir each, never a file: the VFS refuses the rmdir of a
    // directory cachefiles holds (S_KERNEL_FILE: fs/namei.c, vfs_rmdir), so a volume the kernel
    // has acquired since the listing stays.
    std::vector<fs::path> dirs;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) dirs.push_back(it->path());
    dirs.push_back(dir);
    for (const fs::path& d : dirs) {
        if (::rmdir(d.c_str()) != 0 && errno != ENOENT) {
            rafs::failErrno(fmt::format("fscache volume {}: cannot remove {}", volume, d.string()));
        }
    }
}

void FscacheVolumes::cullBootstrap(const std::string& volume, const std::string& fsid) {
    cullCookie(volume, fsid,
               fmt::format("fsid {}: the kernel has the cache file of its bootstrap open (is an image with this fsid "
                           "mounted?)",
                           fsid));
}

void FscacheVolumes::cullBlob(const std::string& volume, const std::string& blob_id) {
    cullCookie(volume, blob_id,
               fmt::format("blob {}: the kernel has its cache file in fscache volume {} open, and rafsd has no chunk "
                           "map that vouches for what it holds (a mount rafsd no longer serves, still in use?)",
                           blob_id, volume));
}

void FscacheVolumes::cullCookie(const std::string& volume, const std::string& key, const std::string& busy) {
    // In the fan-out dir of the key's hash: looked for in all of them rather than hashed here.
    const std::string name = cacheFileName(key);
    const fs::path dir = volumeDir(bound_, "erofs," + volume);
    bool culled = false;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code missing;
        if (!fs::exists(it->path() / name, missing)) continue;
        try {
            engine_.cull(it->path(), name);
            culled = true;
        } catch (const rafs::SystemError& e) {
            if (e.code() == EBUSY) rafs::fail("{}", busy);
            if (e.code() != ENOENT) throw;
        }
    }
    if (culled) emptyGraveyard();
}

// Culled files wait in the graveyard for the daemon to delete them (cachefilesd does the same).
void FscacheVolumes::emptyGraveyard() {
    std::error_code ec;
    for (fs::directory_iterator it(bound_ / "graveyard", ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code ignored;
        fs::remove_all(it->path(), ignored);
        if (ignored) log::warn("cannot remove {}: {}", it->path().string(), ignored.message());
    }
}

}  // namespace rafsd
