// Whether a backend can serve an image's blobs, asked once at mount, so that a wrong password, an
// unknown CA, a missing or short blob or an unreachable server fails the mount with one error
// naming it, instead of every read with EIO.
#pragma once

#include "format/BlobFile.h"
#include "daemon/backends/Backend.h"
#include "daemon/core/BlobDescriptor.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace rafsd {

// Requests a mount makes at once, one per blob: the probes, then the chunk tables.
constexpr unsigned kMountRequestsInFlight = 8;

// What a probe learned of one blob: its size, or why the backend could not give it.
struct BlobProbe {
    std::optional<uint64_t> size;
    std::string error;  // without a size
};
// By blob id.
using ProbedSizes = std::map<std::string, BlobProbe>;

// Fails naming the blob and the backend unless the backend has the blob and it holds every chunk.
// What `probed` says of it is used rather than asking the backend again. Called for blobs whose
// cache is not complete: a complete one needs no backend.
void checkBackendHas(Backend& backend, const BlobDescriptor& blob, const ProbedSizes& probed = {});

// Each blob once (a network backend's HEAD, asked now), concurrently, before any of its metadata is
// loaded. A blob the backend cannot give is recorded, not an error: checkBackendHas says so for a
// blob whose cache needs the backend.
ProbedSizes probeBlobs(Backend& backend, const std::vector<std::string>& blob_ids);
// The blobs of `image`; the last blob of an image with an inline bootstrap is the local file itself.
ProbedSizes probeBlobs(Backend& backend, const rafs::Image& image);

}  // namespace rafsd
