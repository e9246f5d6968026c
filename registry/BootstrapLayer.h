// The bootstrap layer of a RAFS image in Nydus's OCI form: the last layer of the manifest, a tar
// (gzip-compressed or plain) holding `image/image.boot`, the bootstrap, possibly beside other
// files (containerd/nydus-snapshotter pkg/converter/convert_unix.go writes it so). rafsd reads
// it to mount an image by reference; mkrafs convert writes it.
#pragma once

#include "registry/ImageStore.h"
#include "registry/OciImage.h"

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace registry {

inline constexpr std::string_view kBootstrapLayerPath = "image/image.boot";
// Bounds on what is held in memory: the layer as fetched, and the bootstrap it unpacks to (a
// gzip bomb stops here). Bootstraps of images with millions of files stay well below.
inline constexpr uint64_t kMaxBootstrapLayerSize = 512ull << 20;
inline constexpr uint64_t kMaxBootstrapSize = 1ull << 30;

// Throws rafs::Error naming `name` unless `layer`'s media type is one rafs reads a bootstrap layer
// from: a tar, plain or gzip (OCI or Docker); encrypted layers, for one, are not.
void checkBootstrapLayerType(const Descriptor& layer, std::string_view name);

// image/image.boot out of the tar (plain or gzip) `layer`. Throws rafs::Error naming `name`:
// not a tar, corrupt gzip, no image/image.boot, a member that is not a regular file or larger
// than kMaxBootstrapSize, a member shorter than its header says.
std::vector<uint8_t> bootstrapFromLayer(std::span<const uint8_t> layer, std::string_view name);

// Fetches the layer `layer` from `store`, checks its size and sha256 against the descriptor and
// returns the bootstrap in it. Throws rafs::Error naming `name` and what is wrong.
std::vector<uint8_t> fetchBootstrapLayer(ImageStore& store, const Descriptor& layer, std::string_view name);

// The layer mkrafs convert writes: a gzip'd tar of the directory `image/` and `image/image.boot`
// (mode 0444). Every header field and the gzip header are fixed (mtime 0, owner 0), so the same
// bootstrap always gives the same layer digest.
struct BootstrapLayerBlob {
    std::string gzip;        // the layer blob
    std::string digest;      // "sha256:" of `gzip`
    std::string tar_digest;  // "sha256:" of the tar: the config's diff_id
};

// Throws rafs::Error naming `bootstrap` if it cannot be read.
BootstrapLayerBlob makeBootstrapLayer(const std::filesystem::path& bootstrap);

}  // namespace registry
