#include "daemon/api/BackendProbe.h"

#include "format/Error.h"

#include <algorithm>

namespace rafsd {

void checkBackendHas(Backend& backend, const BlobDescriptor& blob, const ProbedSizes& probed) {
    uint64_t needed = 0;
    for (const rafs::BlobChunk& c : blob.chunks) needed = std::max(needed, c.compressed_offset + c.compressed_size);
    uint64_t size = 0;
    try {
        const auto known = probed.find(blob.id);
        size = known != probed.end() ? known->second : backend.size(blob.id);
    } catch (const std::exception& e) {
        rafs::fail("blob {}: not available from {}: {}", blob.id, backend.describe(), e.what());
    }
    if (size < needed) {
        rafs::fail("blob {}: {} has {} bytes of it, but its chunks end at {}", blob.id, backend.describe(), size, needed);
    }
}

ProbedSizes probeBlobs(Backend& backend, const rafs::Image& image) {
    ProbedSizes sizes;
    const auto& blobs = image.bootstrap.blobs();
    for (size_t i = 0; i < blobs.size(); ++i) {
        if (image.inline_meta && i + 1 == blobs.size()) continue;
        try {
            sizes[blobs[i].id] = backend.size(blobs[i].id);
        } catch (const std::exception& e) {
            rafs::fail("blob {}: {}", blobs[i].id, e.what());
        }
    }
    return sizes;
}

}  // namespace rafsd
