// The mounts a supervised rafsd has made, kept in its state dir. After the process dies, the kernel
// keeps those mounts served as long as /dev/cachefiles or the fanotify group stays open (the
// supervisor, systemd's fd store): the next worker reads this table to take them over (reattach)
// instead of mounting again.
#pragma once

#include "format/UniqueFd.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace rafsd {

// A file as the kernel knows it, whatever its path: (st_dev, st_ino).
struct FileIdentity {
    uint64_t dev = 0;
    uint64_t ino = 0;
    bool operator==(const FileIdentity&) const = default;
};

struct MountRecord {
    std::string engine;  // "fscache" or "fanotify"
    std::filesystem::path bootstrap;
    std::filesystem::path mountpoint;
    std::string fsid;       // fscache only
    std::string domain_id;  // fscache only; empty: none
    std::optional<std::filesystem::path> blob_dir;
    // Mounted by image reference: the reference as given and the manifest it resolved to, whose
    // bootstrap the state dir keeps (RegistryImages.h), so a restarted rafsd serves the same blobs
    // even if the tag has moved since. Empty for a bootstrap mounted by path.
    std::string image = {};
    std::string manifest_digest = {};
    // fscache: registered for the user's mount by hand (--register-only), not mounted by rafsd.
    bool register_only = false;
    // The bootstrap layer's diff of a layer store entry (MountRequest::layer_store): mounted again
    // by a rafsd that starts and finds it unmounted.
    bool layer_store = false;
    // fscache: left failing by a rafsd killed whole, and to be mounted again by the next rafsd
    // that finds it unmounted (ImageService::remountAtStart), as a layer store entry is.
    bool mount_again = false;
    // fanotify: unmounted, but its superblock still read its files (a lazily detached mount with a
    // file open, a copy in another mount namespace): taken over without its path, served until
    // the stop fills its files.
    bool detached = false;
    // fanotify: the watch on its superblock in the inotify instance the supervisor keeps
    // (SuperblockWatch.h), which tells a worker taking over whether a mount off its path is gone.
    int superblock_watch = -1;
    // fanotify: each blob's cache file as mounted, in blob-table order. A worker taking the mount
    // over checks that the files it marks are these: after a cache_dir change, or a file removed
    // or replaced, new marks on other files would leave the mount reading holes as zeros unseen.
    // Empty in tables of earlier versions: not checked.
    std::vector<FileIdentity> cache_files = {};
    bool operator==(const MountRecord&) const = default;
};

// Replaces the table at `path` atomically: a temporary file next to it, fsynced, renamed over it,
// then the directory fsynced, so a crash leaves the old table or the new one, never a mix. Creates
// the directory if missing. Throws rafs::Error naming the file and the failed step.
void saveMounts(const std::filesystem::path& path, const std::vector<MountRecord>& mounts);

// The table at `path`; empty if there is none. Throws rafs::Error "<path>: <what is wrong>".
std::vector<MountRecord> loadMounts(const std::filesystem::path& path);

// Where the tables live in a state dir: `rafsd serve` keeps "mounts.json", each `rafsd mount` of an
// image reference "mount-<its supervisor's pid>.json".
std::filesystem::path servedMountTable(const std::filesystem::path& state_dir);
std::filesystem::path imageMountTable(const std::filesystem::path& state_dir, int supervisor_pid);

// The right to write the served table of `state_dir`: an flock on "mounts.json.lock" beside it,
// held by the rafsd serve worker that writes the table for as long as it lives (the lock goes
// with its death). A second rafsd serve on the same state dir would take the first one's mounts
// for its own predecessor's and rewrite the table without them. Waits up to `wait` (a worker
// taking over, for its predecessor's end), then throws rafs::Error naming the state dir. Creates
// the state dir if missing.
rafs::UniqueFd lockServedMountTable(const std::filesystem::path& state_dir, std::chrono::milliseconds wait);

// The manifest digests of the images every table in `state_dir` lists: mounted by any rafsd on
// this state dir, or by one that died and whose successor will take them over from the bootstrap
// kept for that manifest. Throws rafs::Error naming a table that cannot be read.
std::set<std::string> manifestsInMountTables(const std::filesystem::path& state_dir);

}  // namespace rafsd
