// A blob of zeros for the core's tests, which look at what the core decides rather than at the
// bytes it writes: its descriptor and chunk extents, and a cache file that holds no data.
#pragma once

#include "daemon/core/BlobCache.h"
#include "daemon/core/BlobDescriptor.h"
#include "daemon/core/CacheFile.h"
#include "daemon/core/CachedBlob.h"
#include "daemon/core/ReadinessBitmap.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace rafsd::test {

class NullCacheFile : public CacheFile {
public:
    explicit NullCacheFile(uint64_t size) : size_(size) {}
    std::string name() const override { return "null cache file"; }
    uint64_t size() const override { return size_; }
    bool hasData(uint64_t, uint64_t) const override { return true; }
    void sync() override {}

private:
    void writeBlocks(uint64_t, std::span<const uint8_t>) override {}
    uint64_t size_;
};

// `count` uncompressed chunks of `chunk_size` zeros, back to back, with their BLAKE3 digests.
struct ZeroBlob {
    BlobDescriptor descriptor;
    std::vector<ChunkExtent> extents;

    ZeroBlob(const std::string& id, uint32_t count, uint32_t chunk_size) {
        BlobDescriptor& d = descriptor;
        d.id = id;
        d.compressor = rafs::Compressor::None;
        d.digester = rafs::Digester::Blake3;
        d.chunk_size = chunk_size;
        d.uncompressed_size = uint64_t{count} * chunk_size;
        for (uint32_t i = 0; i < count; ++i) {
            const uint64_t at = uint64_t{i} * chunk_size;
            d.chunks.push_back({at, chunk_size, at, chunk_size, false, false, 0});
            extents.push_back({at, chunk_size});
        }
        const std::vector<uint8_t> zeros(chunk_size, 0);
        d.digests.assign(count, rafs::digestOf(rafs::Digester::Blake3, zeros));
    }

    // The blob as the fetcher serves it: read from `backend`, cached in `file` (by default one
    // that holds no data), its readiness bitmap at `bitmap`.
    std::shared_ptr<CachedBlob> cached(const std::filesystem::path& bitmap, std::shared_ptr<Backend> backend,
                                       std::unique_ptr<CacheFile> file = nullptr) const {
        if (!file) file = std::make_unique<NullCacheFile>(descriptor.uncompressed_size);
        const auto chunks = static_cast<uint32_t>(descriptor.chunks.size());
        return std::make_shared<CachedBlob>(
            descriptor,
            std::make_unique<BlobCache>(std::move(file),
                                        ReadinessBitmap::open(bitmap, descriptor.id, chunks, descriptor.uncompressed_size),
                                        extents),
            std::move(backend));
    }
};

}  // namespace rafsd::test
