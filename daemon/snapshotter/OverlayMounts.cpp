#include "daemon/snapshotter/OverlayMounts.h"

namespace rafsd {

std::vector<MountSpec> snapshotMounts(SnapshotKind kind, const std::filesystem::path& upper,
                                      const std::filesystem::path& work,
                                      const std::vector<std::filesystem::path>& lowers) {
    const bool readonly = kind == SnapshotKind::View;
    if (lowers.empty()) return {{"bind", upper.string(), {readonly ? "ro" : "rw", "rbind"}}};
    // overlayfs refuses a mount with no upper layer and a single lower one.
    if (readonly && lowers.size() == 1) return {{"bind", lowers.front().string(), {"ro", "rbind"}}};
    std::string lowerdir = "lowerdir=";
    for (size_t i = 0; i < lowers.size(); ++i) lowerdir += (i ? ":" : "") + lowers[i].string();
    if (readonly) return {{"overlay", "overlay", {lowerdir}}};
    return {{"overlay", "overlay", {"workdir=" + work.string(), "upperdir=" + upper.string(), lowerdir}}};
}

}  // namespace rafsd
