// The blob compression-info ("ci") array: one entry per stored chunk, in ci-index order, packed
// as V1 (16 B) or V2 (24 B) entries (rafs-v6.md §3.2), followed in the blob by a 4 KiB header
// (§3.3) that must agree with the bootstrap's blob table entry.
#pragma once

#include "kernel-abi/rafs.h"

#include <cstdint>
#include <span>
#include <vector>

namespace rafs {

// One ci entry, unpacked. `compressed` selects decompression with the blob's compressor; a raw
// chunk has compressed_size == uncompressed_size. crc32 (CRC32C of the uncompressed chunk) can be
// stored in V2 entries only.
struct BlobChunk {
    uint64_t compressed_offset = 0;
    uint32_t compressed_size = 0;
    uint64_t uncompressed_offset = 0;
    uint32_t uncompressed_size = 0;
    bool compressed = false;
    bool has_crc32 = false;
    uint32_t crc32 = 0;

    bool operator==(const BlobChunk&) const = default;
};

// Encoders throw Error if a field does not fit the format (sizes 1..16 MiB, uncompressed offset
// 4 KiB aligned below 2^44, compressed offset below 2^40, V1: compressed iff the sizes differ and
// no crc32). Decoders of single entries only unpack; V2 rejects zran, batch and encrypted
// entries, which BlobChunk cannot describe.
BlobChunkInfoV1 encodeChunkInfoV1(const BlobChunk& chunk);
BlobChunk decodeChunkInfoV1(const BlobChunkInfoV1& raw);
BlobChunkInfoV2 encodeChunkInfoV2(const BlobChunk& chunk);
BlobChunk decodeChunkInfoV2(const BlobChunkInfoV2& raw);

std::vector<uint8_t> encodeChunkInfoArray(std::span<const BlobChunk> chunks, bool v2);

// Throws Error naming the ci index of the first inconsistent entry: a raw chunk whose sizes
// differ, an empty compressed size, or an uncompressed range that does not start at or after the
// end of the previous entry's.
void checkChunkSequence(std::span<const BlobChunk> chunks);

// Decodes the first `count` entries of `raw` (bytes past them, such as zran or batch contexts,
// are not read). Throws Error if `raw` is too short, or if the entries fail checkChunkSequence.
std::vector<BlobChunk> decodeChunkInfoArray(std::span<const uint8_t> raw, uint32_t count, bool v2);

BlobMetaHeader makeBlobMetaHeader(uint32_t features, Compressor ci_compressor, uint32_t entries,
                                  uint64_t ci_offset, uint64_t ci_compressed_size,
                                  uint64_t ci_uncompressed_size);

// Throws Error naming the blob and the field unless both magics are right and the header agrees
// with the blob table entry on features, ci compressor, entry count, offset and sizes (the same
// fields nydusd compares before it trusts a cached blob.meta).
void checkBlobMetaHeader(const BlobMetaHeader& header, const BlobTableEntry& entry);

}  // namespace rafs
