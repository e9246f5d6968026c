#include "format/ChunkInfoCodec.h"

#include "format/ByteView.h"
#include "format/Error.h"

#include <cstring>
#include <string>

namespace rafs {

namespace {

constexpr uint64_t kCompOffsetMask = 0xff'ffff'ffffULL;    // 40 bits, both versions
constexpr uint64_t kUncompOffsetMask = 0xfff'ffff'f000ULL;  // V1: bits 12..43 in place
constexpr uint64_t kMaxChunkBytes = 1ULL << 24;           // sizes are stored as size-1 in 24 bits
constexpr uint64_t kV2MaxCompressedSize = 0xff'ffffULL;   // V2 stores csize itself in 24 bits
constexpr unsigned kV1SizeLowShift = 44;                  // size-1 bits 0..19
constexpr uint64_t kV1SizeLowMask = 0xf'ffffULL;
constexpr unsigned kV1UncompSizeHighShift = 8;  // size-1 bits 20..23 at bits 8..11
constexpr unsigned kV1CompSizeHighShift = 40;   // size-1 bits 20..23 at bits 40..43
constexpr unsigned kV2UncompSizeShift = 32;
constexpr unsigned kV2FlagsShift = 56;
constexpr unsigned kV2CompSizeShift = 40;
constexpr uint64_t kV2FlagCompressed = 0x01;
constexpr uint64_t kV2FlagHasCrc32 = 0x10;
constexpr uint32_t kBlobPage = 4096;

std::string blobId(const BlobTableEntry& e) {
    const char* id = reinterpret_cast<const char*>(e.blob_id);
    return std::string(id, strnlen(id, sizeof(e.blob_id)));
}

// Checks what both versions share; `version` names the format in messages.
void checkEncodable(const BlobChunk& c, const char* version) {
    if (c.uncompressed_size == 0 || c.uncompressed_size > kMaxChunkBytes) {
        fail("ci {}: uncompressed size {} outside 1..{}", version, c.uncompressed_size, kMaxChunkBytes);
    }
    if (c.compressed_size == 0) fail("ci {}: compressed size 0", version);
    if (c.uncompressed_offset % kBlobPage != 0 || c.uncompressed_offset > kUncompOffsetMask) {
        fail("ci {}: uncompressed offset {:#x} is not 4 KiB aligned below 2^44", version,
             c.uncompressed_offset);
    }
    if (c.compressed_offset > kCompOffsetMask) {
        fail("ci {}: compressed offset {:#x} does not fit 40 bits", version, c.compressed_offset);
    }
    if (!c.compressed && c.compressed_size != c.uncompressed_size) {
        fail("ci {}: raw chunk at {:#x} stores {} bytes for {}", version, c.uncompressed_offset,
             c.compressed_size, c.uncompressed_size);
    }
}

}  // namespace

BlobChunkInfoV1 encodeChunkInfoV1(const BlobChunk& c) {
    checkEncodable(c, "V1");
    if (c.compressed_size > kMaxChunkBytes) {
        fail("ci V1: compressed size {} exceeds {}", c.compressed_size, kMaxChunkBytes);
    }
    // V1 has no flags: a chunk counts as compressed exactly when its two sizes differ.
    if (c.compressed && c.compressed_size == c.uncompressed_size) {
        fail("ci V1: compressed chunk at {:#x} has equal sizes ({}), which V1 reads as raw",
             c.uncompressed_offset, c.compressed_size);
    }
    if (c.has_crc32) fail("ci V1 cannot store a crc32 (chunk at {:#x})", c.uncompressed_offset);
    const uint64_t us = c.uncompressed_size - 1ULL;
    const uint64_t cs = c.compressed_size - 1ULL;
    BlobChunkInfoV1 raw{};
    raw.uncomp_info = c.uncompressed_offset | (us & kV1SizeLowMask) << kV1SizeLowShift |
                      (us >> 20) << kV1UncompSizeHighShift;
    raw.comp_info = c.compressed_offset | (cs & kV1SizeLowMask) << kV1SizeLowShift |
                    (cs >> 20) << kV1CompSizeHighShift;
    return raw;
}

BlobChunk decodeChunkInfoV1(const BlobChunkInfoV1& raw) {
    BlobChunk c;
    c.uncompressed_offset = raw.uncomp_info & kUncompOffsetMask;
    c.uncompressed_size = static_cast<uint32_t>(
        ((raw.uncomp_info >> kV1SizeLowShift) | ((raw.uncomp_info >> kV1UncompSizeHighShift) & 0xf) << 20) + 1);
    c.compressed_offset = raw.comp_info & kCompOffsetMask;
    c.compressed_size = static_cast<uint32_t>(
        ((raw.comp_info >> kV1SizeLowShift) | ((raw.comp_info >> kV1CompSizeHighShift) & 0xf) << 20) + 1);
    c.compressed = c.compressed_size != c.uncompressed_size;
    return c;
}

BlobChunkInfoV2 encodeChunkInfoV2(const BlobChunk& c) {
    checkEncodable(c, "V2");
    if (c.compressed_size > kV2MaxCompressedSize) {
        fail("ci V2: compressed size {} exceeds {}", c.compressed_size, kV2MaxCompressedSize);
    }
    const uint64_t flags = (c.compressed ? kV2FlagCompressed : 0) | (c.has_crc32 ? kV2FlagHasCrc32 : 0);
    BlobChunkInfoV2 raw{};
    raw.uncomp_info = c.uncompressed_offset >> 12 |
                      (c.uncompressed_size - 1ULL) << kV2UncompSizeShift | flags << kV2FlagsShift;
    raw.comp_info = c.compressed_offset | uint64_t{c.compressed_size} << kV2CompSizeShift;
    raw.data = c.has_crc32 ? c.crc32 : 0;
    return raw;
}

BlobChunk decodeChunkInfoV2(const BlobChunkInfoV2& raw) {
    const uint64_t flags = raw.uncomp_info >> kV2FlagsShift;
    if ((flags & ~(kV2FlagCompressed | kV2FlagHasCrc32)) != 0) {
        fail("ci V2 entry with unsupported flags {:#x} (zran, batch and encrypted chunks are not supported)",
             flags);
    }
    BlobChunk c;
    c.uncompressed_offset = (raw.uncomp_info & 0xffff'ffffULL) << 12;
    c.uncompressed_size = static_cast<uint32_t>(((raw.uncomp_info >> kV2UncompSizeShift) & 0xff'ffff) + 1);
    c.compressed_offset = raw.comp_info & kCompOffsetMask;
    c.compressed_size = static_cast<uint32_t>(raw.comp_info >> kV2CompSizeShift);
    c.compressed = (flags & kV2FlagCompressed) != 0;
    c.has_crc32 = (flags & kV2FlagHasCrc32) != 0;
    c.crc32 = c.has_crc32 ? static_cast<uint32_t>(raw.data) : 0;
    return c;
}

std::vector<uint8_t> encodeChunkInfoArray(std::span<const BlobChunk> chunks, bool v2) {
    const size_t entry = v2 ? sizeof(BlobChunkInfoV2) : sizeof(BlobChunkInfoV1);
    std::vector<uint8_t> out(chunks.size() * entry);
    for (size_t i = 0; i < chunks.size(); ++i) {
        if (v2) {
            BlobChunkInfoV2 raw = encodeChunkInfoV2(chunks[i]);
            std::memcpy(out.data() + i * entry, &raw, entry);
        } else {
            BlobChunkInfoV1 raw = encodeChunkInfoV1(chunks[i]);
            std::memcpy(out.data() + i * entry, &raw, entry);
        }
    }
    return out;
}

void checkChunkSequence(std::span<const BlobChunk> chunks) {
    uint64_t previous_end = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
        const BlobChunk& c = chunks[i];
        if (c.compressed_size == 0) fail("ci entry {}: compressed size 0", i);
        if (!c.compressed && c.compressed_size != c.uncompressed_size) {
            fail("ci entry {}: raw chunk stores {} bytes for {}", i, c.compressed_size, c.uncompressed_size);
        }
        if (i > 0 && c.uncompressed_offset < previous_end) {
            fail("ci entry {}: uncompressed offset {:#x} overlaps the previous chunk (ends at {:#x})", i,
                 c.uncompressed_offset, previous_end);
        }
        previous_end = c.uncompressed_offset + c.uncompressed_size;
    }
}

std::vector<BlobChunk> decodeChunkInfoArray(std::span<const uint8_t> raw, uint32_t count, bool v2) {
    const uint64_t entry = v2 ? sizeof(BlobChunkInfoV2) : sizeof(BlobChunkInfoV1);
    if (count > kMaxChunksPerBlob) fail("ci array: {} entries exceed the limit of {}", count, kMaxChunksPerBlob);
    if (raw.size() / entry < count) {
        fail("ci array of {} bytes is too short for {} {} entries", raw.size(), count, v2 ? "V2" : "V1");
    }
    std::vector<BlobChunk> chunks;
    chunks.reserve(count);
    for (uint32_t i = 0; i < count; ++i) {
        chunks.push_back(v2 ? decodeChunkInfoV2(loadAt<BlobChunkInfoV2>(raw, i * entry))
                            : decodeChunkInfoV1(loadAt<BlobChunkInfoV1>(raw, i * entry)));
    }
    checkChunkSequence(chunks);
    return chunks;
}

BlobMetaHeader makeBlobMetaHeader(uint32_t features, Compressor ci_compressor, uint32_t entries,
                                  uint64_t ci_offset, uint64_t ci_compressed_size,
                                  uint64_t ci_uncompressed_size) {
    BlobMetaHeader h{};
    h.s_magic = kBlobMetaMagic;
    h.s_features = features;
    h.s_ci_compressor = static_cast<uint32_t>(ci_compressor);
    h.s_ci_entries = entries;
    h.s_ci_offset = ci_offset;
    h.s_ci_compressed_size = ci_compressed_size;
    h.s_ci_uncompressed_size = ci_uncompressed_size;
    h.s_magic2 = kBlobMetaMagic;
    return h;
}

void checkBlobMetaHeader(const BlobMetaHeader& h, const BlobTableEntry& e) {
    if (h.s_magic != kBlobMetaMagic || h.s_magic2 != kBlobMetaMagic) {
        fail("blob {}: bad ci header magic {:#x}/{:#x} at offset {}", blobId(e), h.s_magic, h.s_magic2,
             e.ci_offset + e.ci_compressed_size);
    }
    auto agree = [&](const char* field, uint64_t header_value, uint64_t table_value) {
        if (header_value != table_value) {
            fail("blob {}: ci header {} {:#x} disagrees with the blob table's {:#x}", blobId(e), field,
                 header_value, table_value);
        }
    };
    agree("features", h.s_features, e.features);
    agree("ci_compressor", h.s_ci_compressor, e.ci_compressor);
    agree("ci_entries", h.s_ci_entries, e.chunk_count);
    agree("ci_offset", h.s_ci_offset, e.ci_offset);
    agree("ci_compressed_size", h.s_ci_compressed_size, e.ci_compressed_size);
    agree("ci_uncompressed_size", h.s_ci_uncompressed_size, e.ci_uncompressed_size);
}

}  // namespace rafs
