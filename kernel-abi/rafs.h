// RAFS v6 extensions on top of EROFS, as written by Nydus (rafs/src/metadata/layout/v6.rs,
// storage/src/meta/). Plain structs with every size and offset pinned; no logic.
#pragma once

#include "erofs.h"

namespace rafs {

// Superblock conventions of a RAFS v6 bootstrap.
inline constexpr uint32_t kFeatureCompatRafsV6 = 0x40000000;
inline constexpr uint32_t kFeatureIncompatRafsV6 =
    erofs::kFeatureIncompatChunkedFile | erofs::kFeatureIncompatDeviceTable;
inline constexpr uint16_t kDeviceTableSlotOffset = 11;  // device table at byte 1408
inline constexpr uint64_t kExtSuperOffset = erofs::kSuperOffset + sizeof(erofs::SuperBlock);
inline constexpr uint64_t kDeviceTableOffset = kDeviceTableSlotOffset * erofs::kDeviceSlotSize;
inline constexpr uint16_t kRootNid = erofs::kBlockSize >> erofs::kInodeSlotBits;  // 128
inline constexpr unsigned kBlobIdLen = 64;  // lowercase sha256 hex
inline constexpr unsigned kMaxBlobs = 255;  // device_id keeps blob index+1 in 8 bits
inline constexpr uint32_t kMaxChunksPerBlob = 1u << 24;
inline constexpr uint32_t kMinChunkSize = 0x1000;
inline constexpr uint32_t kMaxChunkSize = 0x1000000;
inline constexpr uint32_t kDefaultChunkSize = 0x100000;
inline constexpr uint64_t kMappedBlkaddrAlignment = 0x80000;  // V6_BLOCK_SEG_ALIGNMENT

// RafsSuperFlags in the extended superblock.
enum SuperFlags : uint64_t {
    kFlagCompressionNone = 0x1,
    kFlagCompressionLz4 = 0x2,
    kFlagHashBlake3 = 0x4,
    kFlagHashSha256 = 0x8,
    kFlagExplicitUidGid = 0x10,
    kFlagHasXattr = 0x20,
    kFlagCompressionGzip = 0x40,
    kFlagCompressionZstd = 0x80,
    kFlagInlinedChunkDigest = 0x100,
    kFlagTarfsMode = 0x200,
    kFlagEncryptionNone = 0x01000000,
    kFlagEncryptionAes128Xts = 0x02000000,
};
inline constexpr uint64_t kFlagCompressionMask =
    kFlagCompressionNone | kFlagCompressionLz4 | kFlagCompressionGzip | kFlagCompressionZstd;
inline constexpr uint64_t kFlagHashMask = kFlagHashBlake3 | kFlagHashSha256;

struct SuperBlockExt {
    uint64_t s_flags;
    uint64_t s_blob_table_offset;
    uint32_t s_blob_table_size;
    uint32_t s_chunk_size;
    uint64_t s_chunk_table_offset;
    uint64_t s_chunk_table_size;
    uint64_t s_prefetch_table_offset;
    uint32_t s_prefetch_table_size;
    uint32_t s_padding;
    uint8_t s_reserved[200];
};
static_assert(sizeof(SuperBlockExt) == 256);
static_assert(offsetof(SuperBlockExt, s_flags) == 0);
static_assert(offsetof(SuperBlockExt, s_blob_table_offset) == 8);
static_assert(offsetof(SuperBlockExt, s_blob_table_size) == 16);
static_assert(offsetof(SuperBlockExt, s_chunk_size) == 20);
static_assert(offsetof(SuperBlockExt, s_chunk_table_offset) == 24);
static_assert(offsetof(SuperBlockExt, s_chunk_table_size) == 32);
static_assert(offsetof(SuperBlockExt, s_prefetch_table_offset) == 40);
static_assert(offsetof(SuperBlockExt, s_prefetch_table_size) == 48);
static_assert(offsetof(SuperBlockExt, s_padding) == 52);
static_assert(offsetof(SuperBlockExt, s_reserved) == 56);
static_assert(kExtSuperOffset == 1152);
static_assert(kDeviceTableOffset == 1408);

// Compression and digest algorithm numbers used in the blob table and the ci header.
enum class Compressor : uint32_t { None = 0, Lz4Block = 1, Gzip = 2, Zstd = 3 };
enum class Digester : uint32_t { Blake3 = 0, Sha256 = 1 };
inline constexpr unsigned kDigestSize = 32;

// BlobFeatures.
enum BlobFeatures : uint32_t {
    kBlobAligned = 0x1,
    kBlobInlinedFsMeta = 0x2,
    kBlobChunkInfoV2 = 0x4,
    kBlobZran = 0x8,
    kBlobSeparate = 0x10,
    kBlobInlinedChunkDigest = 0x20,
    kBlobTarfs = 0x40,
    kBlobBatch = 0x80,
    kBlobEncrypted = 0x100,
    kBlobHasTarHeader = 0x10000000,
    kBlobHasToc = 0x20000000,
    kBlobCapTarToc = 0x40000000,
};

struct BlobTableEntry {
    uint8_t blob_id[64];
    uint32_t blob_index;
    uint32_t chunk_size;
    uint32_t chunk_count;
    uint32_t compression_algo;
    uint32_t digest_algo;
    uint32_t features;
    uint64_t compressed_size;
    uint64_t uncompressed_size;
    uint32_t blob_toc_size;
    uint32_t ci_compressor;
    uint64_t ci_offset;
    uint64_t ci_compressed_size;
    uint64_t ci_uncompressed_size;
    uint8_t blob_toc_digest[32];
    uint8_t blob_meta_digest[32];
    uint64_t blob_meta_size;
    uint8_t cipher_iv[8];
    uint32_t cipher_algo;
    uint8_t reserved[36];
};
static_assert(sizeof(BlobTableEntry) == 256);
static_assert(offsetof(BlobTableEntry, blob_id) == 0);
static_assert(offsetof(BlobTableEntry, blob_index) == 64);
static_assert(offsetof(BlobTableEntry, chunk_size) == 68);
static_assert(offsetof(BlobTableEntry, chunk_count) == 72);
static_assert(offsetof(BlobTableEntry, compression_algo) == 76);
static_assert(offsetof(BlobTableEntry, digest_algo) == 80);
static_assert(offsetof(BlobTableEntry, features) == 84);
static_assert(offsetof(BlobTableEntry, compressed_size) == 88);
static_assert(offsetof(BlobTableEntry, uncompressed_size) == 96);
static_assert(offsetof(BlobTableEntry, blob_toc_size) == 104);
static_assert(offsetof(BlobTableEntry, ci_compressor) == 108);
static_assert(offsetof(BlobTableEntry, ci_offset) == 112);
static_assert(offsetof(BlobTableEntry, ci_compressed_size) == 120);
static_assert(offsetof(BlobTableEntry, ci_uncompressed_size) == 128);
static_assert(offsetof(BlobTableEntry, blob_toc_digest) == 136);
static_assert(offsetof(BlobTableEntry, blob_meta_digest) == 168);
static_assert(offsetof(BlobTableEntry, blob_meta_size) == 200);
static_assert(offsetof(BlobTableEntry, cipher_iv) == 208);
static_assert(offsetof(BlobTableEntry, cipher_algo) == 216);
static_assert(offsetof(BlobTableEntry, reserved) == 220);

// RafsV6InodeChunkAddr: overlays erofs::ChunkIndex. The ci index is split over advise (bits
// 0-15) and the high byte of device_id (bits 16-23); the low byte of device_id is blob_index+1,
// which the kernel keeps after masking with roundup_pow_of_two(extra_devices+1)-1.
struct ChunkAddr {
    uint16_t c_blob_addr_lo;
    uint16_t c_blob_addr_hi;
    uint32_t c_blk_addr;
};
static_assert(sizeof(ChunkAddr) == sizeof(erofs::ChunkIndex));
static_assert(offsetof(ChunkAddr, c_blob_addr_lo) == offsetof(erofs::ChunkIndex, advise));
static_assert(offsetof(ChunkAddr, c_blob_addr_hi) == offsetof(erofs::ChunkIndex, device_id));
static_assert(offsetof(ChunkAddr, c_blk_addr) == offsetof(erofs::ChunkIndex, blkaddr));

// RafsV5ChunkInfo: the bootstrap's chunk info table (one per unique digest and blob).
enum ChunkFlags : uint32_t {
    kChunkCompressed = 0x1,
    kChunkEncrypted = 0x4,
    kChunkBatch = 0x8,
    kChunkHasCrc32 = 0x10,
};
struct ChunkInfo {
    uint8_t block_id[32];
    uint32_t blob_index;
    uint32_t flags;
    uint32_t compressed_size;
    uint32_t uncompressed_size;
    uint64_t compressed_offset;
    uint64_t uncompressed_offset;
    uint64_t file_offset;
    uint32_t index;
    uint32_t crc32;
};
static_assert(sizeof(ChunkInfo) == 80);
static_assert(offsetof(ChunkInfo, block_id) == 0);
static_assert(offsetof(ChunkInfo, blob_index) == 32);
static_assert(offsetof(ChunkInfo, flags) == 36);
static_assert(offsetof(ChunkInfo, compressed_size) == 40);
static_assert(offsetof(ChunkInfo, uncompressed_size) == 44);
static_assert(offsetof(ChunkInfo, compressed_offset) == 48);
static_assert(offsetof(ChunkInfo, uncompressed_offset) == 56);
static_assert(offsetof(ChunkInfo, file_offset) == 64);
static_assert(offsetof(ChunkInfo, index) == 72);
static_assert(offsetof(ChunkInfo, crc32) == 76);

// Blob compression-info ("ci") array entries. Bit packing lives in format/ChunkInfoCodec.
struct BlobChunkInfoV1 {
    uint64_t uncomp_info;
    uint64_t comp_info;
};
static_assert(sizeof(BlobChunkInfoV1) == 16);
static_assert(offsetof(BlobChunkInfoV1, uncomp_info) == 0);
static_assert(offsetof(BlobChunkInfoV1, comp_info) == 8);

struct BlobChunkInfoV2 {
    uint64_t uncomp_info;
    uint64_t comp_info;
    uint64_t data;
};
static_assert(sizeof(BlobChunkInfoV2) == 24);
static_assert(offsetof(BlobChunkInfoV2, uncomp_info) == 0);
static_assert(offsetof(BlobChunkInfoV2, comp_info) == 8);
static_assert(offsetof(BlobChunkInfoV2, data) == 16);

inline constexpr uint32_t kBlobMetaMagic = 0xB10BB10B;
struct BlobMetaHeader {
    uint32_t s_magic;
    uint32_t s_features;
    uint32_t s_ci_compressor;
    uint32_t s_ci_entries;
    uint64_t s_ci_offset;
    uint64_t s_ci_compressed_size;
    uint64_t s_ci_uncompressed_size;
    uint64_t s_ci_zran_offset;
    uint64_t s_ci_zran_size;
    uint32_t s_ci_zran_count;
    uint8_t s_reserved[4032];
    uint32_t s_magic2;
};
static_assert(sizeof(BlobMetaHeader) == 4096);
static_assert(offsetof(BlobMetaHeader, s_magic) == 0);
static_assert(offsetof(BlobMetaHeader, s_features) == 4);
static_assert(offsetof(BlobMetaHeader, s_ci_compressor) == 8);
static_assert(offsetof(BlobMetaHeader, s_ci_entries) == 12);
static_assert(offsetof(BlobMetaHeader, s_ci_offset) == 16);
static_assert(offsetof(BlobMetaHeader, s_ci_compressed_size) == 24);
static_assert(offsetof(BlobMetaHeader, s_ci_uncompressed_size) == 32);
static_assert(offsetof(BlobMetaHeader, s_ci_zran_offset) == 40);
static_assert(offsetof(BlobMetaHeader, s_ci_zran_size) == 48);
static_assert(offsetof(BlobMetaHeader, s_ci_zran_count) == 56);
static_assert(offsetof(BlobMetaHeader, s_reserved) == 60);
static_assert(offsetof(BlobMetaHeader, s_magic2) == 4092);

// Blob table of contents entry ("rafs.blob.toc" section).
enum TocFlags : uint32_t { kTocNone = 1, kTocZstd = 2, kTocLz4Block = 4 };
struct TocEntry {
    uint32_t flags;
    uint32_t reserved1;
    uint8_t name[16];
    uint8_t uncompressed_digest[32];
    uint64_t compressed_offset;
    uint64_t compressed_size;
    uint64_t uncompressed_size;
    uint8_t reserved2[48];
};
static_assert(sizeof(TocEntry) == 128);
static_assert(offsetof(TocEntry, flags) == 0);
static_assert(offsetof(TocEntry, reserved1) == 4);
static_assert(offsetof(TocEntry, name) == 8);
static_assert(offsetof(TocEntry, uncompressed_digest) == 24);
static_assert(offsetof(TocEntry, compressed_offset) == 56);
static_assert(offsetof(TocEntry, compressed_size) == 64);
static_assert(offsetof(TocEntry, uncompressed_size) == 72);
static_assert(offsetof(TocEntry, reserved2) == 80);

inline constexpr char kTocNameImageBlob[] = "image.blob";
inline constexpr char kTocNameBlobMeta[] = "blob.meta";
inline constexpr char kTocNameBlobMetaHeader[] = "blob.meta.header";
inline constexpr char kTocNameBlobDigest[] = "blob.digest";
inline constexpr char kTocNameImageBoot[] = "image.boot";
inline constexpr char kTocNameToc[] = "rafs.blob.toc";

// The GNU tar header that follows (not precedes) each blob section.
struct TarHeader {
    char name[100];
    char mode[8];
    char uid[8];
    char gid[8];
    char size[12];
    char mtime[12];
    char chksum[8];
    char typeflag;
    char linkname[100];
    char magic[8];  // "ustar  \0": GNU magic and version
    char uname[32];
    char gname[32];
    char devmajor[8];
    char devminor[8];
    char padding[167];
};
static_assert(sizeof(TarHeader) == 512);
static_assert(offsetof(TarHeader, name) == 0);
static_assert(offsetof(TarHeader, mode) == 100);
static_assert(offsetof(TarHeader, uid) == 108);
static_assert(offsetof(TarHeader, gid) == 116);
static_assert(offsetof(TarHeader, size) == 124);
static_assert(offsetof(TarHeader, mtime) == 136);
static_assert(offsetof(TarHeader, chksum) == 148);
static_assert(offsetof(TarHeader, typeflag) == 156);
static_assert(offsetof(TarHeader, linkname) == 157);
static_assert(offsetof(TarHeader, magic) == 257);
static_assert(offsetof(TarHeader, uname) == 265);
static_assert(offsetof(TarHeader, gname) == 297);
static_assert(offsetof(TarHeader, devmajor) == 329);
static_assert(offsetof(TarHeader, devminor) == 337);
static_assert(offsetof(TarHeader, padding) == 345);

}  // namespace rafs
