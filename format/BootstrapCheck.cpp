#include "format/BootstrapCheck.h"

#include "format/ByteView.h"
#include "format/Error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace rafs {

namespace {

constexpr uint64_t kBlock = erofs::kBlockSize;
// Compat bits a RAFS image may carry: the RAFS marker, and MTIME (extended inodes hold mtime,
// informational). SB_CHKSUM would make the kernel verify a checksum RAFS leaves 0, XATTR_FILTER
// would let h_name_filter hide xattrs (fs/erofs/xattr.c).
constexpr uint32_t kFeatureCompatMtime = 0x2;
constexpr uint32_t kKnownCompat = kFeatureCompatRafsV6 | kFeatureCompatMtime;
constexpr std::string_view kAclAccess = "system.posix_acl_access";
constexpr std::string_view kAclDefault = "system.posix_acl_default";

// Names and paths come from the image: messages print them with {:?}, escaped, so that an
// error stays one line whatever bytes a name holds.

// A byte range of the bootstrap that holds something other than inodes.
struct Region {
    uint64_t offset = 0;
    uint64_t size = 0;
    const char* what = "";
};

class Checker {
public:
    explicit Checker(const Bootstrap& b) : b_(b), name_(b.name()) {}

    void imageFields();
    void indexChunkTable();
    void inode(const std::string& path, const Inode& ino);
    void prefetchTable() const;
    BootstrapSummary summary() { return {seen_.size(), std::move(chunk_indexes_)}; }
    bool firstVisit(uint64_t nid) { return seen_.insert(nid).second; }

private:
    template <typename... Args>
    [[noreturn]] void failAt(const Inode& ino, const std::string& path, fmt::format_string<Args...> format,
                             Args&&... args) const {
        fail("{}: nid {} ({:?}): {}", name_, ino.nid, path, fmt::format(format, std::forward<Args>(args)...));
    }
    void placement(const Inode& ino, const std::string& path, uint64_t offset, uint64_t size,
                   const char* what) const;
    void regularFile(const Inode& ino, const std::string& path);
    void symlink(const Inode& ino, const std::string& path) const;
    void xattrs(const Inode& ino, const std::string& path) const;

    const Bootstrap& b_;
    const std::string& name_;
    std::vector<Region> regions_;
    std::unordered_map<uint64_t, const ChunkInfo*> chunk_table_;  // by blob index << 32 | ci index
    std::unordered_set<uint64_t> seen_;
    std::vector<ChunkIndexRef> chunk_indexes_;
};

void Checker::imageFields() {
    const erofs::SuperBlock& sb = b_.superBlock();
    if ((sb.feature_compat & ~kKnownCompat) != 0) {
        fail("{}: superblock feature_compat {:#x} has bits RAFS does not use ({:#x})", name_, sb.feature_compat,
             sb.feature_compat & ~kKnownCompat);
    }
    if (sb.dirblkbits != 0) fail("{}: superblock dirblkbits {} must be 0 (4 KiB directory blocks)", name_, sb.dirblkbits);
    if (sb.xattr_prefix_count != 0 || sb.xattr_prefix_start != 0) {
        fail("{}: superblock xattr_prefix_count {} / xattr_prefix_start {} must be 0 (no long xattr prefixes)",
             name_, sb.xattr_prefix_count, sb.xattr_prefix_start);
    }
    if (sb.packed_nid != 0) fail("{}: superblock packed_nid {} must be 0 (no packed inode)", name_, sb.packed_nid);

    // With a device slot's mapped_blkaddr set, the kernel sends reads of device 0 (the bootstrap)
    // that fall in [mapped_blkaddr, +blocks) to that blob instead (fs/erofs/data.c, erofs_map_dev):
    // directories and symlinks would be read from blob data.
    const uint64_t boot_blocks = b_.bytes().size() / kBlock;
    for (const BootstrapBlob& blob : b_.blobs()) {
        // The blob's uncompressed address space: the kernel reads it in whole blocks, and rafsd
        // sizes the cache file and its readiness bitmap by it.
        if (blob.uncompressed_size % kBlock != 0) {
            fail("{}: blob {} ({}): uncompressed size {} is not a multiple of 4096", name_, blob.index, blob.id,
                 blob.uncompressed_size);
        }
        if (blob.mapped_blkaddr != 0 && blob.mapped_blkaddr < boot_blocks) {
            fail("{}: device slot {} ({}): mapped_blkaddr {} lies inside the bootstrap's {} blocks", name_,
                 blob.index, blob.id, blob.mapped_blkaddr, boot_blocks);
        }
    }

    const SuperBlockExt& ext = b_.extSuperBlock();
    regions_.push_back({0, kDeviceTableOffset + uint64_t{sb.extra_devices} * erofs::kDeviceSlotSize,
                        "superblock and device table"});
    regions_.push_back({ext.s_blob_table_offset, ext.s_blob_table_size, "blob table"});
    regions_.push_back({ext.s_chunk_table_offset, ext.s_chunk_table_size, "chunk info table"});
    if (ext.s_prefetch_table_offset != 0) {
        regions_.push_back({ext.s_prefetch_table_offset, ext.s_prefetch_table_size, "prefetch table"});
    }
}

void Checker::indexChunkTable() {
    for (const ChunkInfo& c : b_.chunkInfos()) {
        const uint64_t key = uint64_t{c.blob_index} << 32 | c.index;
        auto [it, inserted] = chunk_table_.emplace(key, &c);
        if (!inserted && std::memcmp(it->second, &c, offsetof(ChunkInfo, file_offset)) != 0) {
            fail("{}: chunk info table has two different entries for blob {} ci {}", name_, c.blob_index, c.index);
        }
    }
}

void Checker::placement(const Inode& ino, const std::string& path, uint64_t offset, uint64_t size,
                        const char* what) const {
    for (const Region& r : regions_) {
        if (size > 0 && r.size > 0 && offset < r.offset + r.size && r.offset < offset + size) {
            failAt(ino, path, "{} at bytes {}..{} overlaps the {}", what, offset, offset + size, r.what);
        }
    }
}

void Checker::inode(const std::string& path, const Inode& ino) {
    const uint64_t offset = uint64_t{b_.superBlock().meta_blkaddr} * kBlock + (ino.nid << erofs::kInodeSlotBits);
    placement(ino, path, offset, ino.inline_offset - offset, "inode");
    if (ino.nlink == 0) failAt(ino, path, "i_nlink is 0");
    xattrs(ino, path);
    if (ino.isReg()) {
        regularFile(ino, path);
    } else if (ino.isLink()) {
        symlink(ino, path);
    } else if (!ino.isDir() && ino.size != 0) {
        failAt(ino, path, "i_size {} of a device, fifo or socket must be 0", ino.size);
    }
    if (ino.layout != erofs::kChunkBased) {
        placement(ino, path, uint64_t{ino.raw_blkaddr} * kBlock, ino.size - ino.inlineTail(), "data");
    }
}

void Checker::regularFile(const Inode& ino, const std::string& path) {
    if (ino.layout != erofs::kChunkBased) {
        failAt(ino, path, "data layout {} of a regular file: RAFS keeps file data in blobs (layout {}, chunk-based)",
               static_cast<unsigned>(ino.layout), static_cast<unsigned>(erofs::kChunkBased));
    }
    const uint64_t chunk_size = b_.chunkSize();
    const uint64_t kernel_chunk = kBlock << (ino.chunk_format & erofs::kChunkFormatBlkbits);
    if (kernel_chunk != chunk_size) {
        // The kernel maps offset o through index o / kernel_chunk (fs/erofs/data.c), rafsd and
        // nydusd through o / chunk_size. Both agree only if one kernel chunk covers the file and
        // its chunks follow each other in one blob: Nydus's page-cache-sharing layout, or any
        // file within one chunk.
        bool same_mapping = kernel_chunk >= ino.size;
        for (size_t k = 1; same_mapping && k < ino.chunks.size(); ++k) {
            same_mapping = ino.chunks[k].blob_index == ino.chunks[0].blob_index &&
                           ino.chunks[k].uncompressed_offset == ino.chunks[0].uncompressed_offset + k * chunk_size;
        }
        if (!same_mapping) {
            failAt(ino, path,
                   "i_u chunk format {:#x}: the kernel maps the file in {}-byte chunks, rafsd in the superblock's "
                   "{}-byte chunks, and they are not one contiguous run within one kernel chunk",
                   ino.chunk_format, kernel_chunk, chunk_size);
        }
    }
    for (size_t k = 0; k < ino.chunks.size(); ++k) {
        const InodeChunk& c = ino.chunks[k];
        chunk_indexes_.push_back(
            {ino.nid, c.uncompressed_offset, static_cast<uint32_t>(k), c.blob_index, c.ci_index, c.length});
    }
    const uint64_t array = alignUp(ino.inline_offset, sizeof(ChunkAddr));
    placement(ino, path, array, ino.chunks.size() * sizeof(ChunkAddr), "chunk index array");
    if (chunk_table_.empty()) return;
    for (size_t k = 0; k < ino.chunks.size(); ++k) {
        const InodeChunk& c = ino.chunks[k];
        auto it = chunk_table_.find(uint64_t{c.blob_index} << 32 | c.ci_index);
        if (it == chunk_table_.end()) {
            failAt(ino, path, "chunk {}: blob {} ci {} is missing from the chunk info table", k, c.blob_index,
                   c.ci_index);
        }
        const ChunkInfo& info = *it->second;
        if (info.uncompressed_offset != c.uncompressed_offset || info.uncompressed_size != c.length) {
            failAt(ino, path,
                   "chunk {}: blob {} ci {} at {:#x}+{} disagrees with the chunk info table's {:#x}+{}", k,
                   c.blob_index, c.ci_index, c.uncompressed_offset, c.length, info.uncompressed_offset,
                   info.uncompressed_size);
        }
    }
}

void Checker::symlink(const Inode& ino, const std::string& path) const {
    if (ino.size == 0 || ino.size > kMaxSymlinkSize) {
        failAt(ino, path, "symlink i_size {} (a target is 1 to {} bytes)", ino.size, kMaxSymlinkSize);
    }
    const std::vector<uint8_t> target = b_.inodes().readData(ino);
    if (std::find(target.begin(), target.end(), 0) != target.end()) failAt(ino, path, "symlink target holds a NUL byte");
}

void Checker::xattrs(const Inode& ino, const std::string& path) const {
    std::vector<std::string_view> names;
    names.reserve(ino.xattrs.size());
    for (const auto& [name, value] : ino.xattrs) {
        if (name.find('\0') != std::string::npos) failAt(ino, path, "xattr name {:?} holds a NUL byte", name);
        // The ACL indexes name the whole attribute: a suffix would make a name no ACL handler has.
        if (name.starts_with("system.") && name != kAclAccess && name != kAclDefault) {
            failAt(ino, path, "xattr name {:?} is not an ACL", name);
        }
        names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    if (auto dup = std::adjacent_find(names.begin(), names.end()); dup != names.end()) {
        failAt(ino, path, "xattr {:?} appears twice", *dup);
    }
}

void Checker::prefetchTable() const {
    const std::vector<uint32_t>& nids = b_.prefetchNids();
    for (size_t i = 0; i < nids.size(); ++i) {
        if (!seen_.contains(nids[i])) {
            fail("{}: prefetch table entry {}: nid {} is not an inode reachable from the root", name_, i, nids[i]);
        }
    }
}

}  // namespace

BootstrapSummary checkBootstrap(const Bootstrap& bootstrap,
                                const std::function<void(const std::string&, const Inode&)>& visit) {
    Checker checker(bootstrap);
    checker.imageFields();
    checker.indexChunkTable();
    bootstrap.walk([&](const std::string& path, const Inode& ino) {
        if (checker.firstVisit(ino.nid)) checker.inode(path, ino);
        if (visit) visit(path, ino);
    });
    checker.prefetchTable();
    return checker.summary();
}

void checkChunkIndexes(const Bootstrap& bootstrap, const BootstrapSummary& checked,
                       const std::vector<std::span<const BlobChunk>>& ci_by_blob) {
    if (checked.inodes == 0) throw std::logic_error("checkChunkIndexes: the bootstrap's summary is not its check's");
    for (const ChunkIndexRef& c : checked.chunk_indexes) {
        if (c.blob_index >= ci_by_blob.size() || ci_by_blob[c.blob_index].empty()) continue;
        const std::span<const BlobChunk> ci = ci_by_blob[c.blob_index];
        if (c.ci_index < ci.size() && ci[c.ci_index].uncompressed_offset == c.uncompressed_offset &&
            ci[c.ci_index].uncompressed_size == c.length) {
            continue;
        }
        // The path for the message: a walk, on this error path only.
        std::string path;
        bootstrap.walk([&](const std::string& p, const Inode& ino) {
            if (path.empty() && ino.nid == c.nid) path = p;
        });
        fail("{}: nid {} ({:?}): chunk {}: blob {} ci {} at {:#x}+{} disagrees with the blob's ci entry{}",
             bootstrap.name(), c.nid, path, c.k, c.blob_index, c.ci_index, c.uncompressed_offset, c.length,
             c.ci_index >= ci.size() ? std::string(" (none)")
                                     : fmt::format(" ({:#x}+{})", ci[c.ci_index].uncompressed_offset,
                                                   ci[c.ci_index].uncompressed_size));
    }
}

}  // namespace rafs
