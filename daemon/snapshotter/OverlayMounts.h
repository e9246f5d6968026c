// The mounts containerd makes for a snapshot, as its own overlayfs snapshotter makes them
// (containerd snapshots/overlay/overlay.go): an active snapshot is an overlay of its own upper
// and work directories over its parents' trees; a view is read-only; a snapshot without parents
// is a bind mount of its directory. A RAFS image's tree is the EROFS mount rafsd made.
#pragma once

#include "daemon/snapshotter/SnapshotStore.h"

#include <filesystem>
#include <string>
#include <vector>

namespace rafsd {

struct MountSpec {
    std::string type;
    std::string source;
    std::vector<std::string> options;
};

// `lowers`: the parents' trees, nearest first (data-blob layers have none and are left out).
std::vector<MountSpec> snapshotMounts(SnapshotKind kind, const std::filesystem::path& upper,
                                      const std::filesystem::path& work,
                                      const std::vector<std::filesystem::path>& lowers);

}  // namespace rafsd
