// The layers of a RAFS image's manifest by role, in Nydus's OCI form (containerd/nydus-snapshotter
// pkg/converter/convert_unix.go): data blobs (media type application/vnd.oci.image.layer.nydus.blob.v1,
// digest sha256:<blob id>), then last the bootstrap layer, marked by the annotation
// containerd.io/snapshot/nydus-bootstrap: "true".
#pragma once

#include "registry/OciImage.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace registry {

struct RafsLayers {
    Descriptor bootstrap;
    std::vector<Descriptor> blobs;

    // Throws rafs::Error naming `name`: an ordinary OCI image (no bootstrap layer), or a layer of a
    // media type rafs does not serve (encrypted layers, tar layers between the blobs).
    static RafsLayers of(const Manifest& manifest, std::string_view name);
    // Whether blob `blob_id` (hex, as a bootstrap's blob table names it) is one of the data blobs.
    bool hasBlob(std::string_view blob_id) const;
    // The data blobs' ids, in manifest order.
    std::vector<std::string> blobIds() const;
    // The digest of the bootstrap layer's uncompressed tar, as the image config's rootfs.diff_ids
    // lists it, from the layer's containerd.io/uncompressed annotation; nullopt when the manifest
    // does not carry it. (A data blob's diff_id is its own digest: it is stored uncompressed.)
    std::optional<std::string> bootstrapDiffId() const;
};

}  // namespace registry
