// Helpers of the format and inspect tests: the Nydus fixtures (skipped with a warning where
// ../shared is absent), whole-file I/O, and a small hand-made RAFS v6 bootstrap holding every
// entry type, xattrs and a hardlink, which no fixture has.
#pragma once

#include "format/Error.h"
#include "kernel-abi/rafs.h"

#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace rafs::test {

inline const std::string kFixtureDir = "../../../shared/fixtures/nydus";
inline const std::string kBoot22 = kFixtureDir + "/rafs-v6-2.2.boot";
inline const std::string kBlob22Id = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef";
inline const std::string kBlob22 = kFixtureDir + "/" + kBlob22Id;
inline const std::string kInlineBlobName = "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca";
inline const std::string kInlineBlob = kFixtureDir + "/" + kInlineBlobName;
inline const std::string kInlineBlobId = "d788a0eac4ff9779bc2eae3842117a918d847d90fddbea1503f7c5296a4a7de3";

inline bool haveFixtures() {
    return std::filesystem::exists(kBoot22) && std::filesystem::exists(kBlob22) &&
           std::filesystem::exists(kInlineBlob);
}

#define RAFS_REQUIRE_FIXTURES()                                                   \
    do {                                                                          \
        if (!rafs::test::haveFixtures()) {                                        \
            WARN("skipped: Nydus fixtures not found in " << rafs::test::kFixtureDir); \
            return;                                                               \
        }                                                                         \
    } while (0)

inline std::vector<uint8_t> readFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void writeFile(const std::string& path, std::span<const uint8_t> data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    REQUIRE(out);
}

template <typename T>
void put(std::vector<uint8_t>& image, uint64_t offset, const T& value) {
    REQUIRE(offset + sizeof(T) <= image.size());
    std::memcpy(image.data() + offset, &value, sizeof(T));
}

template <typename T>
T get(const std::vector<uint8_t>& image, uint64_t offset) {
    REQUIRE(offset + sizeof(T) <= image.size());
    T value;
    std::memcpy(&value, image.data() + offset, sizeof(T));
    return value;
}

// The hand-made image: no blobs, 5 blocks. Block 1 is the meta base (nids count from 4096), the
// inodes start at nid 128 (byte 8192) in 256-byte slots, block 3 holds /sub's entries and block 4
// the root's. Regular files keep their data in the bootstrap (FLAT_INLINE), which EROFS allows.
//   /acl   0640 1000:1001 "hello\n", xattrs user.comment, system.posix_acl_access, security.selinux
//   /blk   block device 8:1        /chr  char device 1:3 (mtime 1700000000.123456789)
//   /fifo  fifo                    /hard hardlink of /acl       /link symlink -> acl
//   /sock  socket                  /sub  directory with /sub/f, an empty chunk-based file
struct SyntheticImage {
    // Inodes sit in 256-byte slots: 8 nids apart.
    static constexpr uint64_t kRootNid = 128;
    static constexpr uint64_t kAclNid = 136, kBlkNid = 144, kChrNid = 152, kFifoNid = 160, kLinkNid = 168,
                              kSockNid = 176, kSubNid = 184, kFNid = 192;
    static const inline std::string kAclValue = std::string("\x02\x00\x00\x00\x01\x00\x06\x00\xff\xff\xff\xff", 12);

    std::vector<uint8_t> bytes = std::vector<uint8_t>(5 * 4096);

    SyntheticImage() {
        erofs::SuperBlock sb{};
        sb.magic = erofs::kSuperMagic;
        sb.feature_compat = kFeatureCompatRafsV6;
        sb.blkszbits = erofs::kBlockSizeBits;
        sb.root_nid = kRootNid;
        sb.inos = 9;
        sb.build_time = 1234;  // the mtime of compact inodes
        sb.build_time_nsec = 5;
        sb.meta_blkaddr = 1;
        sb.feature_incompat = kFeatureIncompatRafsV6;
        sb.devt_slotoff = kDeviceTableSlotOffset;
        put(bytes, erofs::kSuperOffset, sb);
        SuperBlockExt ext{};
        ext.s_flags = kFlagCompressionZstd | kFlagHashBlake3 | kFlagExplicitUidGid | kFlagHasXattr;
        ext.s_blob_table_offset = 4096;
        ext.s_chunk_size = kDefaultChunkSize;
        ext.s_prefetch_table_offset = 4096;  // in the unused slots of nids 0 and 1
        ext.s_prefetch_table_size = 8;
        put(bytes, kExtSuperOffset, ext);
        put<uint32_t>(bytes, 4096, kAclNid);

        std::vector<std::pair<std::string, std::pair<uint64_t, uint8_t>>> root = {
            {".", {kRootNid, erofs::kFtDirectory}},   {"..", {kRootNid, erofs::kFtDirectory}},
            {"acl", {kAclNid, erofs::kFtRegular}},    {"blk", {kBlkNid, erofs::kFtBlockDevice}},
            {"chr", {kChrNid, erofs::kFtCharDevice}}, {"fifo", {kFifoNid, erofs::kFtFifo}},
            {"hard", {kAclNid, erofs::kFtRegular}},   {"link", {kLinkNid, erofs::kFtSymlink}},
            {"sock", {kSockNid, erofs::kFtSocket}},   {"sub", {kSubNid, erofs::kFtDirectory}},
        };
        const uint64_t root_size = putDir(4, root);
        inode(kRootNid, S_IFDIR | 0755, root_size, erofs::kFlatPlain, 4, 3);
        const uint64_t sub_size = putDir(3, {{".", {kSubNid, erofs::kFtDirectory}},
                                             {"..", {kRootNid, erofs::kFtDirectory}},
                                             {"f", {kFNid, erofs::kFtRegular}}});
        inode(kSubNid, S_IFDIR | 0700, sub_size, erofs::kFlatPlain, 3, 2);

        // /acl: three xattrs, then its data inline.
        std::vector<uint8_t> xattrs(sizeof(erofs::XattrIbodyHeader));
        xattr(xattrs, erofs::kXattrUser, "comment", "x");
        xattr(xattrs, erofs::kXattrPosixAclAccess, "", kAclValue);
        xattr(xattrs, erofs::kXattrSecurity, "selinux", "system_u:object_r:etc_t:s0");
        const uint64_t acl_off = offsetOf(kAclNid);
        inode(kAclNid, S_IFREG | 0640, 6, erofs::kFlatInline, 0, 2,
              static_cast<uint16_t>((xattrs.size() - sizeof(erofs::XattrIbodyHeader)) / 4 + 1), 1000, 1001);
        std::memcpy(bytes.data() + acl_off + 64, xattrs.data(), xattrs.size());
        std::memcpy(bytes.data() + acl_off + 64 + xattrs.size(), "hello\n", 6);

        inode(kBlkNid, S_IFBLK | 0600, 0, erofs::kFlatPlain, erofs::encodeDev(8, 1), 1);
        inode(kChrNid, S_IFCHR | 0666, 0, erofs::kFlatPlain, erofs::encodeDev(1, 3), 1);
        auto chr = get<erofs::InodeExtended>(bytes, offsetOf(kChrNid));
        chr.i_mtime = 1700000000;
        chr.i_mtime_nsec = 123456789;
        put(bytes, offsetOf(kChrNid), chr);
        inode(kFifoNid, S_IFIFO | 0644, 0, erofs::kFlatPlain, 0, 1);
        inode(kLinkNid, S_IFLNK | 0777, 3, erofs::kFlatInline, 0, 1);
        std::memcpy(bytes.data() + offsetOf(kLinkNid) + 64, "acl", 3);
        inode(kSockNid, S_IFSOCK | 0755, 0, erofs::kFlatPlain, 0, 1);
        erofs::InodeCompact f{};
        f.i_format = erofs::inodeFormat(erofs::kInodeVersionCompact, erofs::kChunkBased);
        f.i_mode = S_IFREG | 0644;
        f.i_u = erofs::kChunkFormatIndexes | 8;
        f.i_nlink = 1;
        f.i_uid = 7;
        put(bytes, offsetOf(kFNid), f);
    }

    static uint64_t offsetOf(uint64_t nid) { return 4096 + nid * 32; }

    void inode(uint64_t nid, uint32_t mode, uint64_t size, erofs::DataLayout layout, uint32_t i_u, uint32_t nlink,
               uint16_t icount = 0, uint32_t uid = 0, uint32_t gid = 0) {
        erofs::InodeExtended ino{};
        ino.i_format = erofs::inodeFormat(erofs::kInodeVersionExtended, layout);
        ino.i_xattr_icount = icount;
        ino.i_mode = static_cast<uint16_t>(mode);
        ino.i_size = size;
        ino.i_u = i_u;
        ino.i_ino = static_cast<uint32_t>(nid);
        ino.i_uid = uid;
        ino.i_gid = gid;
        ino.i_mtime = 1600000000;
        ino.i_nlink = nlink;
        put(bytes, offsetOf(nid), ino);
    }

    static void xattr(std::vector<uint8_t>& area, uint8_t index, const std::string& suffix, const std::string& value) {
        erofs::XattrEntry e{static_cast<uint8_t>(suffix.size()), index, static_cast<uint16_t>(value.size())};
        const auto* p = reinterpret_cast<const uint8_t*>(&e);
        area.insert(area.end(), p, p + sizeof(e));
        area.insert(area.end(), suffix.begin(), suffix.end());
        area.insert(area.end(), value.begin(), value.end());
        area.resize((area.size() + 3) / 4 * 4);
    }

    // Writes directory entries (sorted by the caller) into blocks from `block` on, filling each
    // block before starting the next; returns the directory size (the last block's used bytes).
    uint64_t putDir(uint64_t block, const std::vector<std::pair<std::string, std::pair<uint64_t, uint8_t>>>& entries) {
        uint64_t size = 0;
        for (size_t first = 0; first < entries.size(); ++block) {
            size_t count = 0;
            uint64_t need = 0;
            while (first + count < entries.size() &&
                   need + sizeof(erofs::Dirent) + entries[first + count].first.size() <= 4096) {
                need += sizeof(erofs::Dirent) + entries[first + count].first.size();
                ++count;
            }
            const uint64_t base = block * 4096;
            uint64_t name_off = count * sizeof(erofs::Dirent);
            for (size_t i = 0; i < count; ++i) {
                const auto& [name, target] = entries[first + i];
                erofs::Dirent d{};
                d.nid = target.first;
                d.nameoff = static_cast<uint16_t>(name_off);
                d.file_type = target.second;
                put(bytes, base + i * sizeof(d), d);
                std::memcpy(bytes.data() + base + name_off, name.data(), name.size());
                name_off += name.size();
            }
            first += count;
            size += first < entries.size() ? 4096 : name_off;
        }
        return size;
    }
};

}  // namespace rafs::test
