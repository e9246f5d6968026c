// EROFS on-disk structures (fs/erofs/erofs_fs.h), as read by Linux 5.15 and later.
// Plain structs with every size and offset pinned; no logic. All fields are little-endian;
// rafsd targets little-endian hosts only (checked below).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

static_assert(std::endian::native == std::endian::little, "on-disk structs are used in place");

namespace erofs {

inline constexpr uint32_t kSuperMagic = 0xE0F5E1E2;
inline constexpr uint64_t kSuperOffset = 1024;
inline constexpr unsigned kBlockSizeBits = 12;
inline constexpr uint32_t kBlockSize = 1u << kBlockSizeBits;
inline constexpr uint32_t kNullAddr = 0xFFFFFFFF;
inline constexpr unsigned kInodeSlotBits = 5;  // nid = byte offset from meta_blkaddr / 32

inline constexpr uint32_t kFeatureCompatSbChksum = 0x00000001;
inline constexpr uint32_t kFeatureIncompatChunkedFile = 0x00000004;
inline constexpr uint32_t kFeatureIncompatDeviceTable = 0x00000008;

struct SuperBlock {
    uint32_t magic;
    uint32_t checksum;
    uint32_t feature_compat;
    uint8_t blkszbits;
    uint8_t sb_extslots;
    uint16_t root_nid;
    uint64_t inos;
    uint64_t build_time;
    uint32_t build_time_nsec;
    uint32_t blocks;
    uint32_t meta_blkaddr;
    uint32_t xattr_blkaddr;
    uint8_t uuid[16];
    uint8_t volume_name[16];
    uint32_t feature_incompat;
    uint16_t available_compr_algs;
    uint16_t extra_devices;
    uint16_t devt_slotoff;
    uint8_t dirblkbits;
    uint8_t xattr_prefix_count;
    uint32_t xattr_prefix_start;
    uint64_t packed_nid;
    uint8_t xattr_filter_reserved;
    uint8_t reserved2[23];
};
static_assert(sizeof(SuperBlock) == 128);
static_assert(offsetof(SuperBlock, magic) == 0);
static_assert(offsetof(SuperBlock, checksum) == 4);
static_assert(offsetof(SuperBlock, feature_compat) == 8);
static_assert(offsetof(SuperBlock, blkszbits) == 12);
static_assert(offsetof(SuperBlock, sb_extslots) == 13);
static_assert(offsetof(SuperBlock, root_nid) == 14);
static_assert(offsetof(SuperBlock, inos) == 16);
static_assert(offsetof(SuperBlock, build_time) == 24);
static_assert(offsetof(SuperBlock, build_time_nsec) == 32);
static_assert(offsetof(SuperBlock, blocks) == 36);
static_assert(offsetof(SuperBlock, meta_blkaddr) == 40);
static_assert(offsetof(SuperBlock, xattr_blkaddr) == 44);
static_assert(offsetof(SuperBlock, uuid) == 48);
static_assert(offsetof(SuperBlock, volume_name) == 64);
static_assert(offsetof(SuperBlock, feature_incompat) == 80);
static_assert(offsetof(SuperBlock, available_compr_algs) == 84);
static_assert(offsetof(SuperBlock, extra_devices) == 86);
static_assert(offsetof(SuperBlock, devt_slotoff) == 88);
static_assert(offsetof(SuperBlock, dirblkbits) == 90);
static_assert(offsetof(SuperBlock, xattr_prefix_count) == 91);
static_assert(offsetof(SuperBlock, xattr_prefix_start) == 92);
static_assert(offsetof(SuperBlock, packed_nid) == 96);
static_assert(offsetof(SuperBlock, xattr_filter_reserved) == 104);
static_assert(offsetof(SuperBlock, reserved2) == 105);

// i_format: bit 0 version, bits 1-3 data layout. Bits 4+ are 6.15+ only and must stay clear.
inline constexpr uint16_t kInodeVersionCompact = 0;
inline constexpr uint16_t kInodeVersionExtended = 1;
inline constexpr unsigned kInodeLayoutShift = 1;
enum DataLayout : uint16_t {
    kFlatPlain = 0,
    kCompressedFull = 1,
    kFlatInline = 2,
    kCompressedCompact = 3,
    kChunkBased = 4,
};
constexpr uint16_t inodeFormat(uint16_t version, DataLayout layout) {
    return static_cast<uint16_t>(version | (layout << kInodeLayoutShift));
}

// i_u for chunk-based files: bits 0-4 chunkbits (chunk = block << bits), 0x20 = 8-byte indexes.
inline constexpr uint16_t kChunkFormatBlkbits = 0x001F;
inline constexpr uint16_t kChunkFormatIndexes = 0x0020;
inline constexpr uint16_t kChunkFormat48Bit = 0x0040;  // 6.15+; never set in RAFS images

struct InodeCompact {
    uint16_t i_format;
    uint16_t i_xattr_icount;
    uint16_t i_mode;
    uint16_t i_nlink;
    uint32_t i_size;
    uint32_t i_reserved;
    uint32_t i_u;
    uint32_t i_ino;
    uint16_t i_uid;
    uint16_t i_gid;
    uint32_t i_reserved2;
};
static_assert(sizeof(InodeCompact) == 32);
static_assert(offsetof(InodeCompact, i_format) == 0);
static_assert(offsetof(InodeCompact, i_xattr_icount) == 2);
static_assert(offsetof(InodeCompact, i_mode) == 4);
static_assert(offsetof(InodeCompact, i_nlink) == 6);
static_assert(offsetof(InodeCompact, i_size) == 8);
static_assert(offsetof(InodeCompact, i_reserved) == 12);
static_assert(offsetof(InodeCompact, i_u) == 16);
static_assert(offsetof(InodeCompact, i_ino) == 20);
static_assert(offsetof(InodeCompact, i_uid) == 24);
static_assert(offsetof(InodeCompact, i_gid) == 26);
static_assert(offsetof(InodeCompact, i_reserved2) == 28);

struct InodeExtended {
    uint16_t i_format;
    uint16_t i_xattr_icount;
    uint16_t i_mode;
    uint16_t i_reserved;
    uint64_t i_size;
    uint32_t i_u;
    uint32_t i_ino;
    uint32_t i_uid;
    uint32_t i_gid;
    uint64_t i_mtime;
    uint32_t i_mtime_nsec;
    uint32_t i_nlink;
    uint8_t i_reserved2[16];
};
static_assert(sizeof(InodeExtended) == 64);
static_assert(offsetof(InodeExtended, i_format) == 0);
static_assert(offsetof(InodeExtended, i_xattr_icount) == 2);
static_assert(offsetof(InodeExtended, i_mode) == 4);
static_assert(offsetof(InodeExtended, i_reserved) == 6);
static_assert(offsetof(InodeExtended, i_size) == 8);
static_assert(offsetof(InodeExtended, i_u) == 16);
static_assert(offsetof(InodeExtended, i_ino) == 20);
static_assert(offsetof(InodeExtended, i_uid) == 24);
static_assert(offsetof(InodeExtended, i_gid) == 28);
static_assert(offsetof(InodeExtended, i_mtime) == 32);
static_assert(offsetof(InodeExtended, i_mtime_nsec) == 40);
static_assert(offsetof(InodeExtended, i_nlink) == 44);
static_assert(offsetof(InodeExtended, i_reserved2) == 48);

// Inline xattrs: header, shared ids, then entries padded to 4 bytes.
struct XattrIbodyHeader {
    uint32_t h_name_filter;
    uint8_t h_shared_count;
    uint8_t h_reserved2[7];
};
static_assert(sizeof(XattrIbodyHeader) == 12);
static_assert(offsetof(XattrIbodyHeader, h_name_filter) == 0);
static_assert(offsetof(XattrIbodyHeader, h_shared_count) == 4);
static_assert(offsetof(XattrIbodyHeader, h_reserved2) == 5);

struct XattrEntry {
    uint8_t e_name_len;
    uint8_t e_name_index;
    uint16_t e_value_size;
};
static_assert(sizeof(XattrEntry) == 4);
static_assert(offsetof(XattrEntry, e_name_len) == 0);
static_assert(offsetof(XattrEntry, e_name_index) == 1);
static_assert(offsetof(XattrEntry, e_value_size) == 2);

enum XattrIndex : uint8_t {
    kXattrUser = 1,
    kXattrPosixAclAccess = 2,
    kXattrPosixAclDefault = 3,
    kXattrTrusted = 4,
    kXattrLustre = 5,
    kXattrSecurity = 6,
};

// Inline xattr area size for a given i_xattr_icount.
constexpr uint32_t xattrIbodySize(uint16_t icount) {
    return icount == 0 ? 0 : sizeof(XattrIbodyHeader) + 4u * (icount - 1u);
}

// Packed as in the kernel: dirents are 12 bytes apart, so nid is not 8-byte aligned in arrays.
struct __attribute__((packed)) Dirent {
    uint64_t nid;
    uint16_t nameoff;
    uint8_t file_type;
    uint8_t reserved;
};
static_assert(sizeof(Dirent) == 12);
static_assert(offsetof(Dirent, nid) == 0);
static_assert(offsetof(Dirent, nameoff) == 8);
static_assert(offsetof(Dirent, file_type) == 10);
static_assert(offsetof(Dirent, reserved) == 11);

enum FileType : uint8_t {
    kFtUnknown = 0,
    kFtRegular = 1,
    kFtDirectory = 2,
    kFtCharDevice = 3,
    kFtBlockDevice = 4,
    kFtFifo = 5,
    kFtSocket = 6,
    kFtSymlink = 7,
};
inline constexpr unsigned kNameLen = 255;

struct ChunkIndex {
    uint16_t advise;  // 6.15+: startblk_hi, honoured only with kChunkFormat48Bit
    uint16_t device_id;
    uint32_t blkaddr;
};
static_assert(sizeof(ChunkIndex) == 8);
static_assert(offsetof(ChunkIndex, advise) == 0);
static_assert(offsetof(ChunkIndex, device_id) == 2);
static_assert(offsetof(ChunkIndex, blkaddr) == 4);

struct DeviceSlot {
    uint8_t tag[64];
    uint32_t blocks;
    uint32_t mapped_blkaddr;
    uint8_t reserved[56];
};
static_assert(sizeof(DeviceSlot) == 128);
static_assert(offsetof(DeviceSlot, tag) == 0);
static_assert(offsetof(DeviceSlot, blocks) == 64);
static_assert(offsetof(DeviceSlot, mapped_blkaddr) == 68);
static_assert(offsetof(DeviceSlot, reserved) == 72);
inline constexpr unsigned kDeviceSlotSize = sizeof(DeviceSlot);

// Device numbers in i_u, as the kernel's new_encode_dev().
constexpr uint32_t encodeDev(uint32_t major, uint32_t minor) {
    return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}
constexpr uint32_t devMajor(uint32_t dev) { return (dev & 0xfff00) >> 8; }
constexpr uint32_t devMinor(uint32_t dev) { return (dev & 0xff) | ((dev >> 12) & 0xfff00); }

}  // namespace erofs
