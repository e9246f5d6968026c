// RAFS images mounted by reference (`rafsd mount HOST[:PORT]/REPO[:TAG|@DIGEST] MNT`): resolved in
// their registry for this host's platform, their bootstrap fetched from the bootstrap layer and
// kept in the state dir by manifest digest:
//   <dir>/sha256-<hex>/image.json   the manifest as served, its media type, the reference it was
//                                   first mounted by, the sha256 of image.boot
//   <dir>/sha256-<hex>/image.boot   the bootstrap, a file of its own (a fanotify mount needs one)
// The cache collector removes the copies of images no mount table lists (KeptImageCopies).
// A copy is made in a temporary directory next to them and renamed into place whole, so a crash
// leaves no part of one; a copy is reused when its files still match what image.json says.
#pragma once

#include "format/Bootstrap.h"
#include "format/BootstrapCheck.h"
#include "registry/ImageReference.h"
#include "registry/ImageStore.h"
#include "registry/RafsLayers.h"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace rafsd {

// A bootstrap as fetched, and what its check found.
struct CheckedBootstrap {
    rafs::Bootstrap bootstrap;
    rafs::BootstrapSummary summary;
};

struct RegistryImage {
    std::string manifest_digest;           // "sha256:<hex>"
    std::filesystem::path bootstrap;       // the kept copy
    registry::RafsLayers layers;           // the manifest's layers
    // The bootstrap as fetched and checked, when obtain fetched it: the mount uses it rather than
    // read back and check again the copy it has just written.
    std::optional<CheckedBootstrap> fetched;
};

class RegistryImages {
public:
    explicit RegistryImages(std::filesystem::path dir) : dir_(std::move(dir)) {}

    // The image `ref` names in `store`. A reference by digest with a valid copy kept is served
    // from it without asking the registry (a restarted rafsd finds its images while the registry
    // is away). Otherwise the manifest is resolved, and its bootstrap layer fetched, checked
    // (digest, size, tar, image/image.boot, the bootstrap check, its blobs among the layers) and
    // kept, unless a valid copy is kept already. `alongside`, if given, runs on another thread
    // while the bootstrap layer is fetched (not for a kept copy), with the manifest's layers.
    // Throws rafs::Error naming the image (or what `alongside` threw); nothing is left in the
    // state dir then.
    RegistryImage obtain(registry::ImageStore& store, const registry::ImageReference& ref,
                         const std::function<void(const registry::RafsLayers&)>& alongside = {});

    std::filesystem::path imageDir(const std::string& manifest_digest) const;
    const std::filesystem::path& dir() const { return dir_; }

    // The copies kept, by manifest digest: their size on disk and when they were last kept or
    // reused (seconds since the epoch: the directory's mtime, which obtain() renews on reuse).
    struct KeptCopy {
        std::string manifest_digest;
        uint64_t bytes = 0;
        int64_t last_use = 0;
    };
    std::vector<KeptCopy> list() const;
    // Removes the copy kept for `manifest_digest`: renamed out of the way first, so that an
    // obtain() at the same time, in this process or another, finds it whole or not at all.
    // Throws rafs::Error naming the directory.
    void forget(const std::string& manifest_digest);

private:
    // The copy kept for `digest`, if there is one and it is intact; a damaged one is removed.
    std::optional<RegistryImage> kept(const std::string& digest);
    RegistryImage keep(const registry::FetchedManifest& manifest, const registry::RafsLayers& layers,
                       const std::string& reference, std::span<const uint8_t> bootstrap);

    std::filesystem::path dir_;
};

}  // namespace rafsd
