#include "daemon/core/ChunkVerifier.h"

#include "format/Codec.h"
#include "format/Error.h"

#include <cstring>

namespace rafsd {

std::optional<std::string> verifyChunk(rafs::Compressor compressor, rafs::Digester digester,
                                       const rafs::BlobChunk& chunk, const rafs::Digest& expected,
                                       std::span<const uint8_t> stored, std::span<uint8_t> out) {
    if (out.size() != chunk.uncompressed_size) {
        return fmt::format("decode buffer of {} bytes for a chunk of {}", out.size(), chunk.uncompressed_size);
    }
    if (stored.size() != chunk.compressed_size) {
        return fmt::format("got {} bytes, expected {}", stored.size(), chunk.compressed_size);
    }
    try {
        rafs::decompress(chunk.compressed ? compressor : rafs::Compressor::None, stored, out);
    } catch (const rafs::Error& e) {
        return std::string(e.what());
    }
    rafs::Digest actual = rafs::digestOf(digester, out);
    if (actual != expected) {
        return fmt::format("{} digest mismatch: got {}, expected {}", rafs::digesterName(digester),
                           rafs::toHex(actual), rafs::toHex(expected));
    }
    return std::nullopt;
}

}  // namespace rafsd
