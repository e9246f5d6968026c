#include "format/Bootstrap.h"

#include "format/ByteView.h"
#include "format/Error.h"
#include "format/InputFile.h"

#include <bit>
#include <cstring>
#include <unordered_set>

namespace rafs {

namespace {

constexpr uint32_t kRafsV5Magic = 0x52414653;  // RAFS v5 superblock magic at offset 0
constexpr uint64_t kBlock = erofs::kBlockSize;
constexpr uint64_t kMaxUncompressedBlob = 1ULL << 44;  // nydus BLOB_MAX_SIZE_UNCOMPRESSED
constexpr uint64_t kMaxCompressedBlob = 1ULL << 40;    // nydus BLOB_MAX_SIZE_COMPRESSED
constexpr uint32_t kBlobIsChunkdictGenerated = 0x200;
constexpr uint32_t kSupportedChunkFlags = kChunkCompressed | kChunkHasCrc32;

bool overlaps(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
    return a_size > 0 && b_size > 0 && a < b + b_size && b < a + a_size;
}

bool isHexId(std::span<const uint8_t> id) {
    for (uint8_t c : id) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
    }
    return true;
}

}  // namespace

Compressor compressorFromRaw(uint32_t value) {
    if (value > static_cast<uint32_t>(Compressor::Zstd)) fail("unknown compression algorithm {}", value);
    return static_cast<Compressor>(value);
}

Digester digesterFromRaw(uint32_t value) {
    if (value > static_cast<uint32_t>(Digester::Sha256)) fail("unknown digest algorithm {}", value);
    return static_cast<Digester>(value);
}

Bootstrap::Bootstrap(const std::string& path)
    : Bootstrap(InputFile(path).readAll(), path) {}

Bootstrap::Bootstrap(std::vector<uint8_t> image, std::string name)
    : name_(std::move(name)), image_(std::move(image)), inodes_({}, {}, {}) {
    load();
}

void Bootstrap::load() {
    const uint64_t size = image_.size();
    if (size >= sizeof(uint32_t) && loadAt<uint32_t>(image_, 0) == kRafsV5Magic) {
        fail("{}: not a RAFS v6 bootstrap (RAFS v5 superblock; only v6 is supported)", name_);
    }
    if (size < erofs::kSuperOffset + sizeof(uint32_t)) {
        fail("{}: not a RAFS v6 bootstrap (only {} bytes)", name_, size);
    }
    const auto magic = loadAt<uint32_t>(image_, erofs::kSuperOffset);
    if (magic != erofs::kSuperMagic) fail("{}: not a RAFS v6 bootstrap (bad magic {:#x})", name_, magic);
    // mkfs.erofs images carry the same magic; they differ in the RAFS v6 compat bit, which marks
    // the extended superblock at 1152 that the rest of the format hangs off.
    if (size >= erofs::kSuperOffset + sizeof(erofs::SuperBlock) &&
        (loadAt<erofs::SuperBlock>(image_, erofs::kSuperOffset).feature_compat & kFeatureCompatRafsV6) == 0) {
        fail("{}: a plain EROFS image (made by mkfs.erofs?), not a RAFS v6 bootstrap (no RAFS extended "
             "superblock): mount it with mount -t erofs, or build a RAFS image with mkrafs build",
             name_);
    }
    if (size < kBlock || size % kBlock != 0) {
        fail("{}: bootstrap size {} is not a multiple of 4096 (truncated?)", name_, size);
    }
    sb_ = loadAt<erofs::SuperBlock>(image_, erofs::kSuperOffset);
    ext_ = loadAt<SuperBlockExt>(image_, kExtSuperOffset);

    if (sb_.blkszbits != erofs::kBlockSizeBits) {
        fail("{}: block size bits {} (only 4 KiB blocks are supported; 9 is tarfs mode)", name_, sb_.blkszbits);
    }
    if (sb_.checksum != 0) fail("{}: superblock checksum {:#x} must be 0 in RAFS v6", name_, sb_.checksum);
    if (sb_.sb_extslots != 0) fail("{}: superblock extslots {} must be 0", name_, sb_.sb_extslots);
    if (sb_.inos == 0) fail("{}: superblock inode count is 0", name_);
    if (sb_.available_compr_algs != 0) fail("{}: superblock u1 field {:#x} must be 0", name_, sb_.available_compr_algs);
    if (sb_.xattr_blkaddr != 0) fail("{}: shared xattr block {} must be 0", name_, sb_.xattr_blkaddr);
    if (sb_.feature_incompat != kFeatureIncompatRafsV6) {
        fail("{}: incompatible features {:#x}, expected {:#x}", name_, sb_.feature_incompat, kFeatureIncompatRafsV6);
    }
    if (sb_.devt_slotoff != kDeviceTableSlotOffset) {
        fail("{}: device table slot offset {}, expected {}", name_, sb_.devt_slotoff, kDeviceTableSlotOffset);
    }
    if (uint64_t{sb_.meta_blkaddr} * kBlock >= size) {
        fail("{}: meta block address {} is past the end of the image", name_, sb_.meta_blkaddr);
    }
    if (sb_.extra_devices > kMaxBlobs) fail("{}: {} extra devices exceed {}", name_, sb_.extra_devices, kMaxBlobs);
    if (!inBounds(kDeviceTableOffset, uint64_t{sb_.extra_devices} * erofs::kDeviceSlotSize, size)) {
        fail("{}: device table of {} slots runs past the end of the image", name_, sb_.extra_devices);
    }

    const uint64_t compression = ext_.s_flags & kFlagCompressionMask;
    const uint64_t hash = ext_.s_flags & kFlagHashMask;
    if (std::popcount(compression) != 1) fail("{}: flags {:#x} need exactly one compression bit", name_, ext_.s_flags);
    if (std::popcount(hash) != 1) fail("{}: flags {:#x} need exactly one hash bit", name_, ext_.s_flags);
    if (ext_.s_flags & kFlagTarfsMode) fail("{}: tarfs mode is not supported", name_);
    if (ext_.s_flags & kFlagEncryptionAes128Xts) fail("{}: encrypted images are not supported", name_);
    switch (compression) {
    case kFlagCompressionNone: compressor_ = Compressor::None; break;
    case kFlagCompressionLz4: compressor_ = Compressor::Lz4Block; break;
    case kFlagCompressionGzip: compressor_ = Compressor::Gzip; break;
    default: compressor_ = Compressor::Zstd; break;
    }
    digester_ = hash == kFlagHashBlake3 ? Digester::Blake3 : Digester::Sha256;
    const uint32_t chunk_size = ext_.s_chunk_size;
    if (!std::has_single_bit(chunk_size) || chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize) {
        fail("{}: chunk size {:#x} is not a power of two in [4 KiB, 16 MiB]", name_, chunk_size);
    }

    loadBlobTable();
    loadChunkTable();
    loadPrefetchTable();

    InodeGeometry geo;
    geo.meta_blkaddr = sb_.meta_blkaddr;
    geo.chunk_size = chunk_size;
    geo.build_time = sb_.build_time;
    geo.build_time_nsec = sb_.build_time_nsec;
    for (const BootstrapBlob& b : blobs_) geo.blobs.push_back({b.chunk_count, b.uncompressed_size});
    inodes_ = InodeReader(image_, name_, std::move(geo));
    if (!inodes_.inode(rootNid()).isDir()) fail("{}: root nid {} is not a directory", name_, rootNid());
}

void Bootstrap::loadBlobTable() {
    const uint64_t size = image_.size();
    const uint64_t devt_end = kDeviceTableOffset + uint64_t{sb_.extra_devices} * erofs::kDeviceSlotSize;
    const uint64_t offset = ext_.s_blob_table_offset;
    const uint64_t table_size = ext_.s_blob_table_size;
    if (offset % kBlock != 0 || offset < kBlock || offset < devt_end ||
        table_size % sizeof(BlobTableEntry) != 0 || !inBounds(offset, table_size, size)) {
        fail("{}: invalid blob table offset {:#x} / size {:#x}", name_, offset, table_size);
    }
    const uint64_t count = table_size / sizeof(BlobTableEntry);
    if (count != sb_.extra_devices) {
        fail("{}: blob table has {} entries but the device table {} slots", name_, count, sb_.extra_devices);
    }
    std::unordered_set<std::string> ids;
    for (uint32_t i = 0; i < count; ++i) {
        const auto e = loadAt<BlobTableEntry>(image_, offset + i * sizeof(BlobTableEntry));
        const auto slot = loadAt<erofs::DeviceSlot>(image_, kDeviceTableOffset + i * erofs::kDeviceSlotSize);
        BootstrapBlob b;
        b.entry = e;
        b.id.assign(reinterpret_cast<const char*>(e.blob_id), sizeof(e.blob_id));
        const std::string where = fmt::format("{}: blob {}", name_, i);
        if (!isHexId(e.blob_id)) fail("{}: blob id is not 64 hex characters", where);
        if (std::memcmp(slot.tag, e.blob_id, sizeof(slot.tag)) != 0) {
            fail("{} ({}): device tag {:?} differs from the blob id", where, b.id,
                 std::string_view(reinterpret_cast<const char*>(slot.tag), strnlen(reinterpret_cast<const char*>(slot.tag), sizeof(slot.tag))));
        }
        if (!ids.insert(b.id).second) fail("{}: duplicate blob id {}", where, b.id);
        if (e.blob_index != i) fail("{} ({}): blob_index {} differs from its position", where, b.id, e.blob_index);
        if (e.chunk_size != ext_.s_chunk_size) {
            fail("{} ({}): chunk size {:#x} differs from the superblock's {:#x}", where, b.id, e.chunk_size, ext_.s_chunk_size);
        }
        if (e.chunk_count > kMaxChunksPerBlob) fail("{} ({}): {} chunks exceed {}", where, b.id, e.chunk_count, kMaxChunksPerBlob);
        try {
            b.compressor = compressorFromRaw(e.compression_algo);
            b.ci_compressor = compressorFromRaw(e.ci_compressor);
            b.digester = digesterFromRaw(e.digest_algo);
        } catch (const Error& err) {
            fail("{} ({}): {}", where, b.id, err.what());
        }
        if (e.cipher_algo != 0) fail("{} ({}): encrypted blobs are not supported", where, b.id);
        if (e.uncompressed_size > kMaxUncompressedBlob || e.compressed_size > kMaxCompressedBlob) {
            fail("{} ({}): sizes {}/{} exceed the format's limits", where, b.id, e.compressed_size, e.uncompressed_size);
        }
        if (e.features & kUnsupportedBlobFeatures) {
            fail("{} ({}): unsupported features {:#x} (zran, separate, tarfs, batch, encrypted)", where, b.id, e.features);
        }
        if ((e.features & kBlobAligned) == 0) fail("{} ({}): features {:#x} lack ALIGNED", where, b.id, e.features);
        // Bounded also where the size check below does not apply: rafsd allocates and reads these
        // (the ci array, then its header after it) before anything else vouches for them.
        const uint64_t entry_size = (e.features & kBlobChunkInfoV2) ? sizeof(BlobChunkInfoV2) : sizeof(BlobChunkInfoV1);
        if (e.ci_uncompressed_size > uint64_t{kMaxChunksPerBlob} * sizeof(BlobChunkInfoV2) ||
            e.ci_compressed_size > e.ci_uncompressed_size ||
            !inBounds(e.ci_offset, e.ci_compressed_size + sizeof(BlobMetaHeader), kMaxCompressedBlob)) {
            fail("{} ({}): invalid ci range {:#x}+{:#x} ({} uncompressed)", where, b.id, e.ci_offset,
                 e.ci_compressed_size, e.ci_uncompressed_size);
        }
        if ((e.features & kBlobIsChunkdictGenerated) == 0 && e.ci_uncompressed_size != e.chunk_count * entry_size) {
            fail("{} ({}): ci size {} does not match {} chunks", where, b.id, e.ci_uncompressed_size, e.chunk_count);
        }
        if (slot.blocks == 0 || slot.blocks != e.uncompressed_size / kBlock) {
            fail("{} ({}): device blocks {} disagree with uncompressed size {}", where, b.id, slot.blocks,
                 e.uncompressed_size);
        }
        b.index = i;
        b.chunk_size = e.chunk_size;
        b.chunk_count = e.chunk_count;
        b.features = e.features;
        b.compressed_size = e.compressed_size;
        b.uncompressed_size = e.uncompressed_size;
        b.ci_offset = e.ci_offset;
        b.ci_compressed_size = e.ci_compressed_size;
        b.ci_uncompressed_size = e.ci_uncompressed_size;
        b.toc_size = e.blob_toc_size;
        std::memcpy(b.toc_digest.data(), e.blob_toc_digest, b.toc_digest.size());
        b.mapped_blkaddr = slot.mapped_blkaddr;
        blobs_.push_back(std::move(b));
    }
}

void Bootstrap::loadChunkTable() {
    const uint64_t offset = ext_.s_chunk_table_offset;
    const uint64_t table_size = ext_.s_chunk_table_size;
    if (table_size == 0) return;
    const uint64_t devt_end = kDeviceTableOffset + uint64_t{sb_.extra_devices} * erofs::kDeviceSlotSize;
    if (offset % kBlock != 0 || offset < kBlock || offset < devt_end || table_size % sizeof(ChunkInfo) != 0 ||
        !inBounds(offset, table_size, image_.size())) {
        fail("{}: invalid chunk table offset {:#x} / size {:#x}", name_, offset, table_size);
    }
    if (overlaps(offset, table_size, ext_.s_blob_table_offset, ext_.s_blob_table_size)) {
        fail("{}: chunk table {:#x}+{:#x} overlaps the blob table", name_, offset, table_size);
    }
    for (uint64_t pos = offset; pos < offset + table_size; pos += sizeof(ChunkInfo)) {
        const auto c = loadAt<ChunkInfo>(image_, pos);
        const uint64_t index = (pos - offset) / sizeof(ChunkInfo);
        if (c.blob_index >= blobs_.size()) {
            fail("{}: chunk table entry {} names blob {}, but the image has {}", name_, index, c.blob_index, blobs_.size());
        }
        const BootstrapBlob& b = blobs_[c.blob_index];
        if (c.index >= b.chunk_count) {
            fail("{}: chunk table entry {} has ci index {}, but blob {} has {} chunks", name_, index, c.index,
                 b.id, b.chunk_count);
        }
        if ((c.flags & ~kSupportedChunkFlags) != 0) {
            fail("{}: chunk table entry {} has unsupported flags {:#x}", name_, index, c.flags);
        }
        if (c.uncompressed_offset % kBlock != 0 || c.uncompressed_size == 0 || c.uncompressed_size > b.chunk_size ||
            !inBounds(c.uncompressed_offset, c.uncompressed_size, b.uncompressed_size)) {
            fail("{}: chunk table entry {}: uncompressed range {:#x}+{} is invalid in blob {}", name_, index,
                 c.uncompressed_offset, c.uncompressed_size, b.id);
        }
        if ((c.flags & kChunkCompressed) == 0 && c.compressed_size != c.uncompressed_size) {
            fail("{}: chunk table entry {}: raw chunk stores {} bytes for {}", name_, index, c.compressed_size,
                 c.uncompressed_size);
        }
        // The ci formats' own bounds (24-bit sizes, 40-bit offsets): rafsd sizes its fetch buffers
        // by these.
        if (c.compressed_size == 0 || c.compressed_size > kMaxChunkSize ||
            !inBounds(c.compressed_offset, c.compressed_size, kMaxCompressedBlob)) {
            fail("{}: chunk table entry {}: compressed range {:#x}+{} is invalid", name_, index, c.compressed_offset,
                 c.compressed_size);
        }
        chunk_infos_.push_back(c);
    }
}

void Bootstrap::loadPrefetchTable() {
    const uint64_t offset = ext_.s_prefetch_table_offset;
    const uint64_t table_size = ext_.s_prefetch_table_size;
    // Legacy images may carry a size with offset 0 for an empty table; nydusd tolerates it.
    if (table_size == 0 || offset == 0) return;
    const uint64_t devt_end = kDeviceTableOffset + uint64_t{sb_.extra_devices} * erofs::kDeviceSlotSize;
    if (offset < kBlock || offset < devt_end || table_size % sizeof(uint32_t) != 0 ||
        !inBounds(offset, table_size, image_.size()) ||
        overlaps(offset, table_size, ext_.s_blob_table_offset, ext_.s_blob_table_size) ||
        overlaps(offset, table_size, ext_.s_chunk_table_offset, ext_.s_chunk_table_size)) {
        fail("{}: invalid prefetch table offset {:#x} / size {:#x}", name_, offset, table_size);
    }
    for (uint64_t pos = offset; pos < offset + table_size; pos += sizeof(uint32_t)) {
        const auto nid = loadAt<uint32_t>(image_, pos);
        if (nid == 0) break;
        prefetch_.push_back(nid);
    }
}

}  // namespace rafs
