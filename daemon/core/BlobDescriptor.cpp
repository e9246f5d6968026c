#include "daemon/core/BlobDescriptor.h"

#include <cstring>

namespace rafsd {

rafs::Digest BlobDescriptor::fingerprint() const {
    constexpr size_t kPerChunk = sizeof(uint64_t) + sizeof(uint32_t) + rafs::kDigestSize;
    std::vector<uint8_t> bytes;
    bytes.reserve(1 + chunks.size() * kPerChunk);
    bytes.push_back(static_cast<uint8_t>(digester));
    const auto append = [&](const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        bytes.insert(bytes.end(), b, b + n);
    };
    for (size_t i = 0; i < chunks.size(); ++i) {
        append(&chunks[i].uncompressed_offset, sizeof(uint64_t));
        append(&chunks[i].uncompressed_size, sizeof(uint32_t));
        if (i < digests.size()) append(digests[i].data(), rafs::kDigestSize);
    }
    return rafs::digestOf(rafs::Digester::Sha256, bytes);
}

}  // namespace rafsd
