// The fscache mounts rafsd serve has made, kept in its state dir. After the process dies, the kernel
// keeps those mounts as long as /dev/cachefiles stays open (systemd's fd store, the supervisor):
// the next serve reads this table to take them over (reattach) instead of mounting again.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace rafsd {

struct FscacheMountRecord {
    std::filesystem::path bootstrap;
    std::filesystem::path mountpoint;
    std::string fsid;
    std::string domain_id;  // empty: none
    std::optional<std::filesystem::path> blob_dir;
    bool operator==(const FscacheMountRecord&) const = default;
};

// Replaces the table at `path` atomically: a temporary file next to it, fsynced, renamed over it,
// then the directory fsynced, so a crash leaves the old table or the new one, never a mix. Creates
// the directory if missing. Throws rafs::Error naming the file and the failed step.
void saveFscacheMounts(const std::filesystem::path& path, const std::vector<FscacheMountRecord>& mounts);

// The table at `path`; empty if there is none. Throws rafs::Error "<path>: <what is wrong>".
std::vector<FscacheMountRecord> loadFscacheMounts(const std::filesystem::path& path);

}  // namespace rafsd
