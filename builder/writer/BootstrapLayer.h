// The bootstrap as an image layer, as Nydus stores it (rafs-v6.md §5): a gzip'd tar of the
// directory `image/` and the file `image/image.boot` (mode 0444). Every header field and the gzip
// header are fixed (mtime 0, owner 0), so the same bootstrap always gives the same layer digest.
#pragma once

#include <filesystem>
#include <string>

namespace rafs::build {

struct BootstrapLayer {
    std::string gzip;        // the layer blob
    std::string digest;      // "sha256:" of `gzip`
    std::string tar_digest;  // "sha256:" of the tar: the config's diff_id
};

// Throws Error naming `bootstrap` if it cannot be read.
BootstrapLayer makeBootstrapLayer(const std::filesystem::path& bootstrap);

}  // namespace rafs::build
