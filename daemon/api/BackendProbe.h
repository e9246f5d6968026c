// Whether a backend can serve an image's blobs, asked once at mount, so that a wrong password, an
// unknown CA, a missing or short blob or an unreachable server fails the mount with one error
// naming it, instead of every read with EIO.
#pragma once

#include "format/BlobFile.h"
#include "daemon/backends/Backend.h"
#include "daemon/core/BlobDescriptor.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace rafsd {

// Requests a mount makes at once, one per blob: the probes, then the chunk tables.
constexpr unsigned kMountRequestsInFlight = 8;

// The blob sizes a probe learned, by blob id.
using ProbedSizes = std::map<std::string, uint64_t>;

// Fails naming the blob and the backend unless the backend has the blob and it holds every chunk.
// A size in `probed` is used rather than asking the backend again.
void checkBackendHas(Backend& backend, const BlobDescriptor& blob, const ProbedSizes& probed = {});

// Each blob once (a network backend's HEAD), concurrently, before any of its metadata is loaded.
// Returns the sizes; fails naming the first blob the backend cannot give.
ProbedSizes probeBlobs(Backend& backend, const std::vector<std::string>& blob_ids);
// The blobs of `image`; the last blob of an image with an inline bootstrap is the local file itself.
ProbedSizes probeBlobs(Backend& backend, const rafs::Image& image);

}  // namespace rafsd
