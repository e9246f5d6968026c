// The bootstraps of registry images kept in the state dir (RegistryImages) as caches the collector
// may remove: a copy goes once no mount table in the state dir lists its manifest (a restarted
// rafsd takes those mounts over from their copies, even with the registry away) and it was not
// kept or reused within keep_recent seconds (a mount on its way, whose table entry is not written
// yet). A copy removed is fetched again by the next mount of its image.
#pragma once

#include "daemon/api/RegistryImages.h"
#include "daemon/core/CacheCollector.h"

#include <chrono>
#include <filesystem>

namespace rafsd {

class KeptImageCopies final : public UnusedCaches {
public:
    KeptImageCopies(RegistryImages images, std::filesystem::path state_dir, std::chrono::seconds keep_recent)
        : images_(std::move(images)), state_dir_(std::move(state_dir)), keep_recent_(keep_recent) {}

    // `in_use` is not consulted: mounts are known by their tables, also those of other processes.
    std::vector<UnusedCache> list(const std::set<std::string>& in_use) override;

private:
    RegistryImages images_;
    std::filesystem::path state_dir_;
    std::chrono::seconds keep_recent_;
};

}  // namespace rafsd
