// Decompresses a chunk as fetched from the backend and checks it against the digest recorded at
// build time. Only chunks that pass reach a cache file.
#pragma once

#include "format/ChunkInfoCodec.h"
#include "format/Digest.h"

#include <optional>
#include <span>
#include <string>

namespace rafsd {

// Decodes `stored` into `out`, which must be chunk.uncompressed_size bytes. Returns an empty
// optional when the chunk is good, else a one-line description of what is wrong (corrupt
// compression, digest mismatch); `out` then holds no meaningful data.
std::optional<std::string> verifyChunk(rafs::Compressor compressor, rafs::Digester digester,
                                       const rafs::BlobChunk& chunk, const rafs::Digest& expected,
                                       std::span<const uint8_t> stored, std::span<uint8_t> out);

}  // namespace rafsd
