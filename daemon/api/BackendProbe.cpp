#include "daemon/api/BackendProbe.h"

#include "daemon/core/Concurrently.h"
#include "format/Error.h"

#include <algorithm>

namespace rafsd {

void checkBackendHas(Backend& backend, const BlobDescriptor& blob, const ProbedSizes& probed) {
    uint64_t needed = 0;
    for (const rafs::BlobChunk& c : blob.chunks) needed = std::max(needed, c.compressed_offset + c.compressed_size);
    uint64_t size = 0;
    const auto known = probed.find(blob.id);
    if (known != probed.end() && !known->second.size) rafs::fail("blob {}: {}", blob.id, known->second.error);
    try {
        size = known != probed.end() ? *known->second.size : backend.probeSize(blob.id);
    } catch (const std::exception& e) {
        rafs::fail("blob {}: not available from {}: {}", blob.id, backend.describe(), e.what());
    }
    if (size < needed) {
        rafs::fail("blob {}: {} has {} bytes of it, but its chunks end at {}", blob.id, backend.describe(), size, needed);
    }
}

ProbedSizes probeBlobs(Backend& backend, const std::vector<std::string>& blob_ids) {
    std::vector<BlobProbe> found(blob_ids.size());
    runConcurrently(blob_ids.size(), kMountRequestsInFlight, [&](size_t i) {
        try {
            found[i].size = backend.probeSize(blob_ids[i]);
        } catch (const std::exception& e) {
            found[i].error = e.what();
        }
    });
    ProbedSizes sizes;
    for (size_t i = 0; i < blob_ids.size(); ++i) sizes[blob_ids[i]] = found[i];
    return sizes;
}

ProbedSizes probeBlobs(Backend& backend, const rafs::Image& image) {
    const auto& blobs = image.bootstrap.blobs();
    const size_t count = image.inline_meta ? blobs.size() - 1 : blobs.size();
    std::vector<std::string> ids;
    for (size_t i = 0; i < count; ++i) ids.push_back(blobs[i].id);
    return probeBlobs(backend, ids);
}

}  // namespace rafsd
