// Whether a backend can serve an image's blobs, asked once at mount, so that a wrong password, an
// unknown CA, a missing or short blob or an unreachable server fails the mount with one error
// naming it, instead of every read with EIO.
#pragma once

#include "format/BlobFile.h"
#include "daemon/backends/Backend.h"
#include "daemon/core/BlobDescriptor.h"

namespace rafsd {

// Fails naming the blob and the backend unless the backend has the blob and it holds every chunk.
void checkBackendHas(Backend& backend, const BlobDescriptor& blob);

// Each blob of `image` once (a network backend's HEAD), before any of its metadata is loaded; the
// last blob of an image with an inline bootstrap is the local file itself.
void probeBlobs(Backend& backend, const rafs::Image& image);

}  // namespace rafsd
