// The fscache engine's caches on disk, one volume per fsid or domain_id: the kernel's cache files
// under <bound dir>/cache/I<volume key>/@<xx>/ (fs/cachefiles/volume.c, namei.c) and rafsd's chunk
// maps under <cache_dir>/fscache-state/<volume>/. A volume no mounted or registered image uses is
// removed whole: each cache file culled through cachefiles' `cull` command (which refuses files
// the kernel has open), the graveyard emptied, then the chunk maps.
#pragma once

#include "daemon/core/CacheCollector.h"
#include "daemon/engines/fscache/FscacheEngine.h"

#include <filesystem>

namespace rafsd {

class FscacheVolumes final : public UnusedCaches {
public:
    // `bound`: the dir cachefiles is bound to; `state`: the chunk maps' dir; `engine`: serves
    // the device the cull commands go to, and outlives this.
    FscacheVolumes(std::filesystem::path bound, std::filesystem::path state, FscacheEngine& engine)
        : bound_(std::move(bound)), state_(std::move(state)), engine_(engine) {}

    // In use: a volume named by a key "fscache:<volume>/<blob id>".
    std::vector<UnusedCache> list(const std::set<std::string>& in_use) override;

private:
    void remove(const std::string& volume);

    std::filesystem::path bound_;
    std::filesystem::path state_;
    FscacheEngine& engine_;
};

}  // namespace rafsd
