// The fscache engine's caches on disk, one volume per fsid or domain_id: the kernel's cache files
// under <bound dir>/cache/I<volume key>/@<xx>/ (fs/cachefiles/volume.c, namei.c) and rafsd's chunk
// maps under <cache_dir>/fscache-state/<volume>/. A volume no mounted or registered image uses is
// removed whole: each cache file culled through cachefiles' `cull` command (which refuses files
// the kernel has open), the graveyard emptied, then the chunk maps, then its directories (which
// the kernel keeps while it has the volume).
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

    // The data of the objects the kernel has open whose cache file is not linked in yet.
    uint64_t unlistedBytes() override;

    // Culls the cache file the kernel kept of the bootstrap of `fsid` in `volume`, if there is
    // one, before an image with that fsid is mounted or registered. Its cookie is named by the
    // fsid, which (unless rafsd derived it from the bootstrap) does not name the bootstrap's
    // content, and cachefiles reuses a file whose size matches
    // (fs/cachefiles/xattr.c, cachefiles_check_auxdata): another bootstrap of the same size,
    // mounted before under the same fsid, would be read from it without a READ reaching rafsd.
    // The bootstrap is then served afresh from rafsd's copy. Throws rafs::Error if the kernel has
    // the file open (a mount with that fsid).
    void cullBootstrap(const std::string& volume, const std::string& fsid);

    // Culls the cache file the kernel kept of blob `blob_id` in `volume`, if there is one, before
    // a blob whose chunk map vouches for nothing (new, or discarded as another image's) is opened:
    // the kernel reads every byte its file holds without a READ reaching rafsd, so bytes cached
    // for another image's description of the blob (other places or digests: a shared domain_id)
    // would be served unchecked. Throws rafs::Error if the kernel has the file open.
    void cullBlob(const std::string& volume, const std::string& blob_id);

private:
    // Culls cookie `key`'s file in `volume` if there is one; `busy` is the error if the kernel
    // has it open.
    void cullCookie(const std::string& volume, const std::string& key, const std::string& busy);
    void remove(const std::string& volume);
    void emptyGraveyard();

    std::filesystem::path bound_;
    std::filesystem::path state_;
    FscacheEngine& engine_;
};

}  // namespace rafsd
