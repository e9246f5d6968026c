// The bootstraps of registry images kept in the state dir (RegistryImages) as caches the collector
// may remove: a copy goes once no mount table in the state dir lists its manifest (a restarted
// rafsd takes those mounts over from their copies, even with the registry away), no mount of this
// process is on its way with it (an Opening of inUseKey(), held until the mount is listed), and it
// was not kept or reused within keep_recent seconds (a mount on its way in another process). A
// copy removed is fetched again by the next mount of its image.
#pragma once

#include "daemon/api/RegistryImages.h"
#include "daemon/core/CacheCollector.h"

#include <chrono>
#include <filesystem>
#include <string>

namespace rafsd {

class KeptImageCopies final : public UnusedCaches {
public:
    KeptImageCopies(RegistryImages images, std::filesystem::path state_dir, std::chrono::seconds keep_recent)
        : images_(std::move(images)), state_dir_(std::move(state_dir)), keep_recent_(keep_recent) {}

    // The collector key (CacheCollector::Opening) of the copy of `manifest_digest` a mount uses.
    static std::string inUseKey(const std::string& manifest_digest) { return "image:" + manifest_digest; }

    std::vector<UnusedCache> list(const std::set<std::string>& in_use) override;

private:
    RegistryImages images_;
    std::filesystem::path state_dir_;
    std::chrono::seconds keep_recent_;
};

}  // namespace rafsd
