// The per-blob files at the top of the cache dir: "<blob id>.blob.data" (the fanotify engine's
// sparse cache file), "<blob id>.chunkmap" (its ReadinessBitmap) and "<blob id>.blob.meta" (the
// blob's chunk table, BlobMetaLoader; kept for fscache blobs too). A blob none of whose users is
// in use can go whole.
#pragma once

#include "daemon/core/CacheCollector.h"

#include <filesystem>
#include <string>
#include <string_view>

namespace rafsd {

class BlobCacheFiles final : public UnusedCaches {
public:
    static constexpr std::string_view kDataSuffix = ".blob.data";
    // The sparse cache file of blob `id` in cache dir `dir`.
    static std::filesystem::path dataFile(const std::filesystem::path& dir, const std::string& id) {
        return dir / (id + std::string(kDataSuffix));
    }

    explicit BlobCacheFiles(std::filesystem::path dir) : dir_(std::move(dir)) {}

    // A blob is in use when a key is its id or ends with "/<id>" (fscache keys).
    std::vector<UnusedCache> list(const std::set<std::string>& in_use) override;

private:
    std::filesystem::path dir_;
};

}  // namespace rafsd
