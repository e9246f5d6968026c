// `rafs-snapshotter register IMAGE`: what containerd's CRI plugin does when it pulls a RAFS image
// with snapshot annotations, for clients that do not (ctr). For every layer of the image's RAFS
// manifest, in order, a Prepare through containerd's own snapshots service (its socket, the
// namespace, the snapshotter's name) with the labels CRI would give it: snapshot.ref = the layer's
// chain ID, cri.image-ref, cri.manifest-digest, cri.layer-digest and the layer's annotations. The
// snapshotter commits each remotely and answers ALREADY_EXISTS, so containerd records the chain
// without a byte of the layers. With the image's manifest and config in containerd's content
// store (`ctr content fetch --metadata-only`), `ctr run --snapshotter rafs IMAGE` then finds it
// unpacked. containerd's records of the chain are labelled containerd.io/gc.root, so its garbage
// collector keeps them while no container references them; `unregister` removes the chain.
#pragma once

#include "daemon/snapshotter/RemoteLayers.h"

#include <filesystem>
#include <string>
#include <vector>

namespace rafsd {

struct ContainerdTarget {
    std::filesystem::path socket = "/run/containerd/containerd.sock";
    std::string namespace_name = "default";
    std::string snapshotter = "rafs";
};

struct RegisteredLayer {
    std::string digest;
    std::string chain_id;
};

// Prepares the chain; returns the layers and their chain IDs, bottom first. Throws rafs::Error
// naming the image and layer when a layer is not taken remotely (the snapshotter prepared it as
// an ordinary snapshot: that one is removed again), or containerd refuses.
std::vector<RegisteredLayer> registerImage(RemoteLayers& registries, const ContainerdTarget& target,
                                           const std::string& image);
// Removes the chain `image` registered, top first; snapshots already gone are skipped.
void unregisterImage(RemoteLayers& registries, const ContainerdTarget& target, const std::string& image);

}  // namespace rafsd
