#include "daemon/api/MountTable.h"

#include "format/Error.h"
#include "daemon/core/DurableFile.h"
#include "daemon/core/Log.h"
#include "format/FileIo.h"
#include "format/FileLock.h"

#include <fcntl.h>

#include <cerrno>
#include <nlohmann/json.hpp>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

constexpr int kVersion = 1;
constexpr std::string_view kServedTable = "mounts.json";
constexpr std::string_view kServedTableLock = "mounts.json.lock";
// "mount-<supervisor pid>.json"
constexpr std::string_view kImageTablePrefix = "mount-";
constexpr std::string_view kImageTableSuffix = ".json";

}  // namespace

void saveMounts(const fs::path& path, const std::vector<MountRecord>& mounts) {
    nlohmann::json list = nlohmann::json::array();
    for (const MountRecord& m : mounts) {
        nlohmann::json j = {{"engine", m.engine},
                            {"bootstrap", m.bootstrap.string()},
                            {"mountpoint", m.mountpoint.string()},
                            {"fsid", m.fsid},
                            {"domain_id", m.domain_id}};
        if (m.blob_dir) j["blob_dir"] = m.blob_dir->string();
        if (!m.image.empty()) {
            j["image"] = m.image;
            j["manifest_digest"] = m.manifest_digest;
        }
        if (m.register_only) j["register_only"] = true;
        if (m.layer_store) j["layer_store"] = true;
        if (m.mount_again) j["mount_again"] = true;
        if (m.detached) j["detached"] = true;
        if (m.superblock_watch >= 0) j["superblock_watch"] = m.superblock_watch;
        if (!m.cache_files.empty()) {
            nlohmann::json files = nlohmann::json::array();
            for (const FileIdentity& f : m.cache_files) files.push_back({f.dev, f.ino});
            j["cache_files"] = std::move(files);
        }
        list.push_back(std::move(j));
    }
    const std::string text = nlohmann::json{{"version", kVersion}, {"mounts", list}}.dump(2) + "\n";
    replaceFileSynced(path, text);
}

std::vector<MountRecord> loadMounts(const fs::path& path) {
    std::string text;
    try {
        text = rafs::readFile(path.string());
    } catch (const rafs::SystemError& e) {
        if (e.code() == ENOENT) return {};
        throw;
    }
    std::vector<MountRecord> mounts;
    try {
        const nlohmann::json j = nlohmann::json::parse(text);
        if (j.at("version").get<int>() != kVersion) {
            rafs::fail("{}: table version {}, this rafsd reads {}", path.string(), j.at("version").dump(), kVersion);
        }
        for (const nlohmann::json& m : j.at("mounts")) {
            MountRecord r;
            // Tables written before fanotify mounts were kept list fscache mounts only.
            r.engine = m.value("engine", std::string("fscache"));
            if (r.engine != "fscache" && r.engine != "fanotify") rafs::fail("{}: unknown engine '{}'", path.string(), r.engine);
            r.bootstrap = m.at("bootstrap").get<std::string>();
            r.mountpoint = m.at("mountpoint").get<std::string>();
            r.fsid = m.at("fsid").get<std::string>();
            r.domain_id = m.at("domain_id").get<std::string>();
            if (m.contains("blob_dir")) r.blob_dir = m.at("blob_dir").get<std::string>();
            if (m.contains("image")) {
                r.image = m.at("image").get<std::string>();
                r.manifest_digest = m.at("manifest_digest").get<std::string>();
            }
            r.register_only = m.value("register_only", false);
            r.layer_store = m.value("layer_store", false);
            r.mount_again = m.value("mount_again", false);
            r.detached = m.value("detached", false);
            r.superblock_watch = m.value("superblock_watch", -1);
            if (m.contains("cache_files")) {
                for (const nlohmann::json& f : m.at("cache_files")) {
                    r.cache_files.push_back({f.at(0).get<uint64_t>(), f.at(1).get<uint64_t>()});
                }
            }
            mounts.push_back(std::move(r));
        }
    } catch (const nlohmann::json::exception& e) {
        rafs::fail("{}: not a table of mounts: {}", path.string(), e.what());
    }
    return mounts;
}

fs::path servedMountTable(const fs::path& state_dir) { return state_dir / kServedTable; }

rafs::UniqueFd lockServedMountTable(const fs::path& state_dir, std::chrono::milliseconds wait) {
    std::error_code ec;
    fs::create_directories(state_dir, ec);
    if (ec) rafs::fail("cannot create the state dir {}: {}", state_dir.string(), ec.message());
    const fs::path path = state_dir / kServedTableLock;
    rafs::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) rafs::failErrno(fmt::format("cannot open {}", path.string()));
    switch (rafs::lockExclusive(fd.get(), std::chrono::steady_clock::now() + wait, path.string())) {
    case rafs::LockOutcome::Locked:
        break;
    case rafs::LockOutcome::TimedOut:
        rafs::fail("state dir {} is used by another rafsd serve (it holds {}): give each its own state_dir",
                   state_dir.string(), path.string());
    case rafs::LockOutcome::Unsupported:
        log::warn("{}: no lock on this file system; another rafsd serve on this state dir would not be refused",
                  path.string());
        break;
    }
    return fd;
}

fs::path imageMountTable(const fs::path& state_dir, int supervisor_pid) {
    return state_dir / (std::string(kImageTablePrefix) + std::to_string(supervisor_pid) + std::string(kImageTableSuffix));
}

std::set<std::string> manifestsInMountTables(const fs::path& state_dir) {
    std::set<std::string> digests;
    std::error_code ec;
    for (fs::directory_iterator it(state_dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        const bool table = name == kServedTable || (name.starts_with(kImageTablePrefix) && name.ends_with(kImageTableSuffix));
        if (!table) continue;
        for (const MountRecord& r : loadMounts(it->path())) {
            if (!r.manifest_digest.empty()) digests.insert(r.manifest_digest);
        }
    }
    if (ec && ec != std::errc::no_such_file_or_directory) rafs::fail("cannot list {}: {}", state_dir.string(), ec.message());
    return digests;
}

}  // namespace rafsd
