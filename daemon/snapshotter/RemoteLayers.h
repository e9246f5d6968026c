// Which Prepare requests are layers of a RAFS image, from the labels containerd passes with them.
// A pull that labels its layers (containerd's CRI plugin with disable_snapshot_annotations =
// false, or `rafs-snapshotter register`) prepares every layer with
//   containerd.io/snapshot.ref                 the layer's chain ID, the name to commit it under
//   containerd.io/snapshot/cri.image-ref       HOST/REPO:TAG as pulled
//   containerd.io/snapshot/cri.manifest-digest the image manifest's digest
//   containerd.io/snapshot/cri.layer-digest    the layer descriptor's digest
// and with the layer's own annotations under containerd.io/snapshot/ (a Nydus manifest marks its
// layers with nydus-blob and nydus-bootstrap, see registry/RafsLayers.h). When those marks are
// missing, the manifest is fetched from the registry (rafsd's registry configuration: the same
// credentials and CAs) and the layer looked up in it; manifests are cached by digest. A manifest
// that cannot be fetched makes the layer an ordinary one (logged), and is not asked for again for
// a minute: pulls of images from registries rafsd is not configured for keep working.
//
// Those labels may come from the image itself: containerd passes a layer descriptor's own
// containerd.io/snapshot/ annotations as labels, and without the CRI plugin's annotations (its
// default) nothing overrides them. An image could so name another, private image for rafsd to
// mount under its container with the host's credentials. The one label containerd computes itself
// is snapshot.ref, the layer's chain ID: a bootstrap layer is taken only if it is the chain ID of
// the image its labels name.
#pragma once

#include "daemon/api/Config.h"
#include "registry/ImageReference.h"
#include "registry/OciImage.h"
#include "registry/RegistryClient.h"

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace rafsd {

namespace label {
inline constexpr const char* kSnapshotRef = "containerd.io/snapshot.ref";
inline constexpr const char* kImageRef = "containerd.io/snapshot/cri.image-ref";
inline constexpr const char* kManifestDigest = "containerd.io/snapshot/cri.manifest-digest";
inline constexpr const char* kLayerDigest = "containerd.io/snapshot/cri.layer-digest";
}  // namespace label

struct RemoteLayer {
    enum class Role { None, Blob, Bootstrap } role = Role::None;
    std::string image;  // Bootstrap: HOST/REPO@sha256:<manifest digest>, what rafsd mounts
};

class RemoteLayers {
public:
    explicit RemoteLayers(Config::Backend backend) : backend_(std::move(backend)) {}

    // Role::None for a Prepare without snapshot.ref, or for a layer of an ordinary image. Throws
    // rafs::Error when a bootstrap layer lacks what its mount needs.
    RemoteLayer classify(const std::map<std::string, std::string>& labels);

    // The registry client of `host`/`repository` with rafsd's registry configuration.
    std::shared_ptr<registry::RegistryClient> client(const std::string& host, const std::string& repository);

    // The chain IDs of `m`'s layers, bottom first, from its config's rootfs.diff_ids (image-spec
    // config.md: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))),
    // the config fetched from `image`'s repository; cached by config digest. Throws rafs::Error
    // naming `name`.
    std::vector<std::string> chainIds(const registry::ImageReference& image, const registry::Manifest& m,
                                      const std::string& name);

private:
    // `needed`: asked of the registry even if it did not answer a minute ago (a bootstrap layer
    // cannot be taken as an ordinary one instead).
    registry::Manifest manifest(const std::string& image_ref, const std::string& digest, bool needed);

    Config::Backend backend_;
    std::mutex mutex_;
    std::map<std::string, registry::Manifest> manifests_;  // by digest
    // Manifests that could not be fetched, by HOST/REPO@DIGEST: when, and why.
    static constexpr std::chrono::minutes kRetryUnreachable{1};
    std::map<std::string, std::pair<std::chrono::steady_clock::time_point, std::string>> unreachable_;
    std::map<std::string, std::shared_ptr<registry::RegistryClient>> clients_;  // by HOST/REPO
    std::map<std::string, std::vector<std::string>> chains_;  // by config digest
};

}  // namespace rafsd
