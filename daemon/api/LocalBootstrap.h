// A bootstrap as a local file of its own, for a file-backed (fanotify) mount: the inline bootstrap
// of a Nydus blob is extracted into the cache dir.
#pragma once

#include "daemon/core/CacheCollector.h"
#include "format/Bootstrap.h"

#include <chrono>
#include <filesystem>

namespace rafsd {

// <dir>/<sha256 of the bootstrap>.boot, written under a temporary name and renamed, so a mount
// never sees a torn one; an existing one is reused if it holds the bootstrap, else written again,
// and its mtime renewed (ExtractedBootstraps). Throws rafs::Error naming the file.
std::filesystem::path extractBootstrap(const rafs::Bootstrap& bootstrap, const std::filesystem::path& dir);

// The extracted bootstraps in the cache dir as caches the collector may remove: those no EROFS
// mount was made from (by any process) that were not written or reused within keep_recent seconds
// (a mount on its way). A takeover extracts its bootstrap again from the image.
class ExtractedBootstraps final : public UnusedCaches {
public:
    ExtractedBootstraps(std::filesystem::path dir, std::chrono::seconds keep_recent)
        : dir_(std::move(dir)), keep_recent_(keep_recent) {}

    // `in_use` is not consulted: the mounts themselves say which files are in use.
    std::vector<UnusedCache> list(const std::set<std::string>& in_use) override;

private:
    std::filesystem::path dir_;
    std::chrono::seconds keep_recent_;
};

}  // namespace rafsd
