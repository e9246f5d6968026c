// From a tag or digest to one image manifest: an index is narrowed to the platform asked for,
// and, where an index holds both an image and its RAFS twin (Nydus's "merged index",
// rafs-v6.md §5), to the kind asked for.
#pragma once

#include "registry/ImageStore.h"
#include "registry/OciImage.h"

#include <optional>
#include <string>

namespace registry {

enum class ImageKind { Original, Rafs };

struct ResolvedManifest {
    FetchedManifest fetched;
    Manifest manifest;
    std::optional<Platform> platform;  // from the index entry, when there was an index
};

// Whether an index entry is marked as a Nydus manifest (artifactType, or the older
// os.features "nydus.remoteimage.v1").
bool isRafsEntry(const Descriptor& entry);

// Throws rafs::Error naming `name` (the image as the user wrote it): no such tag, no manifest for
// `platform` (listing the platforms there are), a document that is neither index nor manifest.
ResolvedManifest resolveManifest(ImageStore& store, const std::string& reference, const Platform& platform,
                                 ImageKind kind, const std::string& name);

// The manifest an index entry points at, checked against the entry's digest and media type.
ResolvedManifest fetchEntry(ImageStore& store, const Descriptor& entry, const std::string& name);

// Every entry of the index at `reference` that is of `kind`, or the one manifest there is.
std::vector<ResolvedManifest> resolveAllPlatforms(ImageStore& store, const std::string& reference, ImageKind kind,
                                                  const std::string& name);

}  // namespace registry
