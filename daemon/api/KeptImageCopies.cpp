#include "daemon/api/KeptImageCopies.h"

#include "daemon/api/MountTable.h"

#include <ctime>

namespace rafsd {

std::vector<UnusedCache> KeptImageCopies::list(const std::set<std::string>& in_use) {
    const std::set<std::string> mounted = manifestsInMountTables(state_dir_);
    const int64_t recent = std::time(nullptr) - keep_recent_.count();
    std::vector<UnusedCache> out;
    for (const RegistryImages::KeptCopy& copy : images_.list()) {
        if (mounted.count(copy.manifest_digest) != 0 || in_use.count(inUseKey(copy.manifest_digest)) != 0 ||
            copy.last_use > recent) {
            continue;
        }
        out.push_back({"bootstrap of image " + copy.manifest_digest, copy.bytes, copy.last_use,
                       [this, digest = copy.manifest_digest] { images_.forget(digest); }});
    }
    return out;
}

}  // namespace rafsd
