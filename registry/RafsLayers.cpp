#include "registry/RafsLayers.h"

#include "format/Error.h"
#include "registry/BootstrapLayer.h"

#include <algorithm>

namespace registry {

RafsLayers RafsLayers::of(const Manifest& manifest, std::string_view name) {
    if (!manifest.isRafs()) {
        rafs::fail("{}: an ordinary OCI image, not a RAFS image (its last layer is no Nydus bootstrap); "
                   "`mkrafs convert` makes one", name);
    }
    RafsLayers out;
    out.bootstrap = manifest.layers.back();
    checkBootstrapLayerType(out.bootstrap, name);
    for (size_t i = 0; i + 1 < manifest.layers.size(); ++i) {
        const Descriptor& d = manifest.layers[i];
        if (d.media_type != media::kNydusBlob) {
            rafs::fail("{}: layer {} ({}) has media type {}, which rafs does not handle (expected {})", name, i,
                       d.digest, d.media_type, media::kNydusBlob);
        }
        if (d.annotations.contains(annotation::kNydusEncryptedBlob)) {
            rafs::fail("{}: layer {} ({}) is an encrypted Nydus blob, which rafs does not handle", name, i, d.digest);
        }
        out.blobs.push_back(d);
    }
    return out;
}

bool RafsLayers::hasBlob(std::string_view blob_id) const {
    return std::ranges::any_of(blobs, [&](const Descriptor& d) { return d.digest.substr(7) == blob_id; });
}

std::vector<std::string> RafsLayers::blobIds() const {
    std::vector<std::string> ids;
    for (const Descriptor& d : blobs) ids.push_back(d.digest.substr(7));
    return ids;
}

std::optional<std::string> RafsLayers::bootstrapDiffId() const {
    auto it = bootstrap.annotations.find(annotation::kUncompressed);
    if (it == bootstrap.annotations.end()) return std::nullopt;
    return it->second;
}

}  // namespace registry
