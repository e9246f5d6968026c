#include "builder/writer/BootstrapWriter.h"
#include "format/ByteView.h"

#include "format/Error.h"
#include "format/FileType.h"
#include "builder/writer/DirectoryBlocks.h"
#include "builder/writer/OutputFile.h"
#include "builder/writer/XattrEncoding.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <optional>
#include <unordered_map>

namespace rafs::build {

namespace {

constexpr uint64_t kBlock = erofs::kBlockSize;

using rafs::alignUp;

uint8_t fileType(mode_t mode) {
    const uint8_t type = direntFileType(mode);
    if (type == erofs::kFtUnknown) fail("unsupported file type {:o}", mode & S_IFMT);
    return type;
}

// One inode in nid order, with everything needed to place and encode it.
struct Record {
    Inode* inode = nullptr;
    Node* dir = nullptr;  // directories: their tree node
    std::vector<uint8_t> xattrs;
    uint16_t xattr_icount = 0;
    std::optional<DirectoryBlocks> dirents;
    uint64_t data_size = 0;     // directory or symlink bytes
    bool inline_tail = false;   // FLAT_INLINE: the last partial block follows the inode
    bool compact = false;       // 32-byte inode: its mtime is the superblock's build time
    uint64_t pos = 0;           // byte offset of the inode in the bootstrap
    uint32_t start_block = 0;   // first separate data block (dirs and symlinks)

    uint64_t baseSize() const {
        return (compact ? sizeof(erofs::InodeCompact) : sizeof(erofs::InodeExtended)) + xattrs.size();
    }
    uint64_t fullBlocks() const { return inline_tail ? data_size / kBlock : (data_size + kBlock - 1) / kBlock; }
    uint64_t tailSize() const { return inline_tail ? data_size % kBlock : 0; }
};

class Layout {
public:
    Layout(FileTree& tree, const std::vector<BlobInfo>& blobs, const BootstrapOptions& options)
        : tree_(tree), blobs_(blobs), options_(options) {}

    void write(const std::filesystem::path& path);

private:
    void order(Node& dir);
    void add(Node& node);
    void chooseInodeFormats();
    void countLinks();
    void place();
    std::vector<uint8_t> data(const Record& r) const;
    void encodeInode(std::vector<uint8_t>& image, const Record& r) const;
    void encodeTables(std::vector<uint8_t>& image);
    std::vector<ChunkInfo> chunkInfoTable() const;

    FileTree& tree_;
    const std::vector<BlobInfo>& blobs_;
    const BootstrapOptions& options_;

    std::vector<Record> records_;
    std::unordered_map<const Inode*, size_t> record_of_;
    std::vector<uint32_t> prefetch_nids_;
    uint64_t blob_table_offset_ = 0;
    uint64_t prefetch_offset_ = 0;
    uint32_t meta_blkaddr_ = 0;
    uint64_t chunk_table_offset_ = 0;
    uint64_t chunk_table_entries_ = 0;
    uint64_t total_size_ = 0;
    int64_t build_time_ = 0;
    uint32_t build_time_nsec_ = 0;
    std::vector<ChunkInfo> chunk_infos_;
};

void Layout::add(Node& node) {
    Inode* inode = node.inode.get();
    if (record_of_.count(inode) != 0) return;  // another hardlink placed it already
    record_of_.emplace(inode, records_.size());
    Record r;
    r.inode = inode;
    if (inode->isDir()) r.dir = &node;
    try {
        r.xattrs = encodeXattrs(inode->xattrs, r.xattr_icount);
    } catch (const Error& e) {
        fail("{}: {}", FileTree::pathOf(node), e.what());
    }
    records_.push_back(std::move(r));
}

// Depth-first like Nydus: a directory, its non-directory children, then its subdirectories.
void Layout::order(Node& dir) {
    add(dir);
    for (auto& [name, child] : dir.children) {
        if (!child->inode->isDir()) add(*child);
    }
    for (auto& [name, child] : dir.children) {
        if (child->inode->isDir()) order(*child);
    }
}

void Layout::countLinks() {
    for (Record& r : records_) r.inode->nlink = r.inode->isDir() ? 2 : 0;
    tree_.walk([](Node& n, const std::string&) {
        if (n.inode->isDir()) {
            for (auto& [name, child] : n.children) {
                if (child->inode->isDir()) ++n.inode->nlink;
            }
        } else {
            ++n.inode->nlink;
        }
    });
}

// Compact inodes have no mtime of their own: every kernel takes the superblock's build time for
// them. Making the most common mtime the build time lets those inodes be compact (32 bytes
// instead of 64) without losing anything; inodes that need the wider fields stay extended, and
// so do device nodes: Nydus reads no rdev from a compact inode (its RafsV6InodeCompact), and a
// 0:0 character device is overlayfs's whiteout.
void Layout::chooseInodeFormats() {
    std::map<std::pair<int64_t, uint32_t>, size_t> mtimes;
    for (const Record& r : records_) ++mtimes[{r.inode->mtime_sec, r.inode->mtime_nsec}];
    size_t best = 0;
    for (const auto& [mtime, count] : mtimes) {
        if (count > best) {
            best = count;
            build_time_ = mtime.first;
            build_time_nsec_ = mtime.second;
        }
    }
    if (build_time_ < 0) return;  // the superblock's build time is unsigned
    constexpr uint64_t k16 = UINT16_MAX;
    for (Record& r : records_) {
        const Inode& in = *r.inode;
        const uint64_t size = in.isReg() ? in.size : r.data_size;
        r.compact = in.mtime_sec == build_time_ && in.mtime_nsec == build_time_nsec_ && in.uid <= k16 &&
                    in.gid <= k16 && in.nlink <= k16 && size <= UINT32_MAX && !S_ISCHR(in.mode) && !S_ISBLK(in.mode);
    }
}

void Layout::place() {
    const uint64_t n = blobs_.size();
    const uint64_t devices_end = kDeviceTableOffset + n * erofs::kDeviceSlotSize;
    blob_table_offset_ = std::max<uint64_t>(alignUp(devices_end, kBlock), kBlock);
    prefetch_offset_ = blob_table_offset_ + n * sizeof(BlobTableEntry);
    const uint64_t prefetch_end = prefetch_offset_ + 4 * options_.prefetch_paths.size();
    // One empty block below the root puts the root at nid 128, never 0 (rafs-v6.md §2.6).
    meta_blkaddr_ = static_cast<uint32_t>(alignUp(prefetch_end, kBlock) / kBlock);
    const uint64_t meta_base = uint64_t{meta_blkaddr_} * kBlock;

    uint64_t pos = meta_base + kBlock;
    for (Record& r : records_) {
        Inode& in = *r.inode;
        uint64_t size = r.baseSize();
        if (in.isReg()) {
            size = alignUp(size, sizeof(erofs::ChunkIndex)) + in.chunks.size() * sizeof(erofs::ChunkIndex);
        } else if (in.isDir() || in.isLink()) {
            const uint64_t tail = r.data_size % kBlock;
            r.inline_tail = tail != 0 && r.baseSize() + tail <= kBlock;
            size += r.tailSize();
        }
        pos = alignUp(pos, 32);
        // An inline tail must not cross a block boundary.
        if (r.inline_tail && (pos + r.baseSize()) / kBlock != (pos + size - 1) / kBlock) {
            pos = alignUp(pos, kBlock);
        }
        r.pos = pos;
        in.nid = (pos - meta_base) / 32;
        pos += size;
    }
    if (records_.front().inode->nid != kRootNid) fail("internal: root inode not at nid 128");

    uint64_t block = alignUp(pos, kBlock) / kBlock;
    for (Record& r : records_) {
        if (r.fullBlocks() == 0) continue;
        if (block > UINT32_MAX) fail("bootstrap exceeds 2^32 blocks");
        r.start_block = static_cast<uint32_t>(block);
        block += r.fullBlocks();
    }
    if (options_.chunk_table) chunk_infos_ = chunkInfoTable();
    chunk_table_offset_ = block * kBlock;
    chunk_table_entries_ = chunk_infos_.size();
    total_size_ = alignUp(chunk_table_offset_ + chunk_table_entries_ * sizeof(ChunkInfo), kBlock);
}

std::vector<uint8_t> Layout::data(const Record& r) const {
    if (r.dirents) return r.dirents->encode();
    const std::string& t = r.inode->symlink_target;
    return {t.begin(), t.end()};
}

void Layout::encodeInode(std::vector<uint8_t>& image, const Record& r) const {
    const Inode& in = *r.inode;
    erofs::DataLayout layout = erofs::kFlatPlain;
    uint32_t iu = 0;
    if (in.isReg()) {
        layout = erofs::kChunkBased;
        iu = erofs::kChunkFormatIndexes |
             (static_cast<uint32_t>(std::countr_zero(options_.chunk_size)) - erofs::kBlockSizeBits);
    } else if (in.isDir() || in.isLink()) {
        layout = r.inline_tail ? erofs::kFlatInline : erofs::kFlatPlain;
        iu = r.start_block;
    } else if (S_ISCHR(in.mode) || S_ISBLK(in.mode)) {
        iu = erofs::encodeDev(in.rdev_major, in.rdev_minor);
    }
    uint8_t* p = image.data() + r.pos;
    if (r.compact) {
        erofs::InodeCompact dc{};
        dc.i_format = erofs::inodeFormat(erofs::kInodeVersionCompact, layout);
        dc.i_xattr_icount = r.xattr_icount;
        dc.i_mode = static_cast<uint16_t>(in.mode);
        dc.i_nlink = static_cast<uint16_t>(in.nlink);
        dc.i_size = static_cast<uint32_t>(in.isReg() ? in.size : r.data_size);
        dc.i_u = iu;
        dc.i_ino = in.ino;
        dc.i_uid = static_cast<uint16_t>(in.uid);
        dc.i_gid = static_cast<uint16_t>(in.gid);
        std::memcpy(p, &dc, sizeof(dc));
    } else {
        erofs::InodeExtended di{};
        di.i_format = erofs::inodeFormat(erofs::kInodeVersionExtended, layout);
        di.i_xattr_icount = r.xattr_icount;
        di.i_mode = static_cast<uint16_t>(in.mode);
        di.i_size = in.isReg() ? in.size : r.data_size;
        di.i_u = iu;
        di.i_ino = in.ino;
        di.i_uid = in.uid;
        di.i_gid = in.gid;
        di.i_mtime = static_cast<uint64_t>(in.mtime_sec);
        di.i_mtime_nsec = in.mtime_nsec;
        di.i_nlink = in.nlink;
        std::memcpy(p, &di, sizeof(di));
    }
    const uint64_t inode_size = r.compact ? sizeof(erofs::InodeCompact) : sizeof(erofs::InodeExtended);
    if (!r.xattrs.empty()) std::memcpy(p + inode_size, r.xattrs.data(), r.xattrs.size());  // data() may be null
    if (in.isReg()) {
        uint8_t* idx = image.data() + alignUp(r.pos + r.baseSize(), sizeof(erofs::ChunkIndex));
        for (const ChunkRef& c : in.chunks) {
            ChunkAddr a{};
            a.c_blob_addr_lo = static_cast<uint16_t>(c.ci_index & 0xffff);
            a.c_blob_addr_hi = static_cast<uint16_t>((c.blob_index + 1) | (((c.ci_index >> 16) & 0xff) << 8));
            a.c_blk_addr = static_cast<uint32_t>(c.uncompressed_offset / kBlock);
            std::memcpy(idx, &a, sizeof(a));
            idx += sizeof(a);
        }
    } else if (r.data_size != 0) {
        std::vector<uint8_t> bytes = data(r);
        const uint64_t full = r.fullBlocks() * kBlock;
        std::memcpy(image.data() + uint64_t{r.start_block} * kBlock, bytes.data(),
                    std::min<uint64_t>(full, bytes.size()));
        if (r.inline_tail) std::memcpy(p + r.baseSize(), bytes.data() + full, r.tailSize());
    }
}

std::vector<ChunkInfo> Layout::chunkInfoTable() const {
    std::map<Digest, ChunkInfo> unique;  // sorted by digest, as Nydus's BTreeMap
    auto add = [&unique](const ChunkRef& c, uint32_t blob_index, uint64_t file_offset) {
        ChunkInfo ci{};
        std::memcpy(ci.block_id, c.digest.data(), c.digest.size());
        ci.blob_index = blob_index;
        ci.flags = c.compressed ? uint32_t{kChunkCompressed} : 0u;
        ci.compressed_size = c.compressed_size;
        ci.uncompressed_size = c.uncompressed_size;
        ci.compressed_offset = c.compressed_offset;
        ci.uncompressed_offset = c.uncompressed_offset;
        ci.file_offset = file_offset;
        ci.index = c.ci_index;
        unique.emplace(c.digest, ci);
    };
    for (const Record& r : records_) {
        if (!r.inode->isReg()) continue;
        uint64_t file_offset = 0;
        for (const ChunkRef& c : r.inode->chunks) {
            add(c, c.blob_index, file_offset);
            file_offset += options_.chunk_size;
        }
    }
    // Then the chunks of this build's blobs that no file uses. With them the table holds every
    // digest of those blobs, so a mount verifies from the bootstrap alone and need not fetch the
    // blobs' digest sections (rafsd's BlobMetaLoader), and a chunk dict offers every chunk stored.
    for (uint32_t i = 0; i < blobs_.size(); ++i) {
        for (const ChunkRef& c : blobs_[i].chunks) add(c, i, 0);
    }
    std::vector<ChunkInfo> out;
    out.reserve(unique.size());
    for (auto& [digest, ci] : unique) out.push_back(ci);
    return out;
}

void Layout::encodeTables(std::vector<uint8_t>& image) {
    uint64_t device_blocks = 0;
    uint64_t mapped = alignUp(total_size_, kMappedBlkaddrAlignment) / kBlock;
    for (size_t i = 0; i < blobs_.size(); ++i) {
        const BlobInfo& b = blobs_[i];
        const uint64_t blocks = b.entry.uncompressed_size / kBlock;
        erofs::DeviceSlot slot{};
        std::memcpy(slot.tag, b.id.data(), kBlobIdLen);
        slot.blocks = static_cast<uint32_t>(blocks);
        slot.mapped_blkaddr = static_cast<uint32_t>(mapped);
        std::memcpy(image.data() + kDeviceTableOffset + i * sizeof(slot), &slot, sizeof(slot));
        mapped = alignUp((mapped + blocks) * kBlock, kMappedBlkaddrAlignment) / kBlock;
        device_blocks += blocks;

        BlobTableEntry e = b.entry;
        e.blob_index = static_cast<uint32_t>(i);
        std::memcpy(image.data() + blob_table_offset_ + i * sizeof(e), &e, sizeof(e));
    }
    if (mapped > UINT32_MAX || device_blocks > UINT32_MAX) fail("blobs exceed 2^32 blocks");

    for (size_t i = 0; i < prefetch_nids_.size(); ++i) {
        std::memcpy(image.data() + prefetch_offset_ + 4 * i, &prefetch_nids_[i], 4);
    }
    for (size_t i = 0; i < chunk_infos_.size(); ++i) {
        std::memcpy(image.data() + chunk_table_offset_ + i * sizeof(ChunkInfo), &chunk_infos_[i],
                    sizeof(ChunkInfo));
    }

    erofs::SuperBlock sb{};
    sb.magic = erofs::kSuperMagic;
    sb.feature_compat = kFeatureCompatRafsV6;
    sb.blkszbits = erofs::kBlockSizeBits;
    sb.root_nid = kRootNid;
    sb.inos = records_.size();
    sb.build_time = static_cast<uint64_t>(build_time_);
    sb.build_time_nsec = build_time_nsec_;
    sb.blocks = static_cast<uint32_t>(device_blocks);
    sb.meta_blkaddr = meta_blkaddr_;
    sb.feature_incompat = kFeatureIncompatRafsV6;
    sb.extra_devices = static_cast<uint16_t>(blobs_.size());
    sb.devt_slotoff = kDeviceTableSlotOffset;
    std::memcpy(image.data() + erofs::kSuperOffset, &sb, sizeof(sb));

    SuperBlockExt ext{};
    uint64_t flags = kFlagExplicitUidGid | kFlagInlinedChunkDigest;
    switch (options_.compressor) {
    case Compressor::None: flags |= kFlagCompressionNone; break;
    case Compressor::Lz4Block: flags |= kFlagCompressionLz4; break;
    case Compressor::Gzip: flags |= kFlagCompressionGzip; break;
    case Compressor::Zstd: flags |= kFlagCompressionZstd; break;
    }
    flags |= options_.digester == Digester::Blake3 ? kFlagHashBlake3 : kFlagHashSha256;
    for (const Record& r : records_) {
        if (r.xattr_icount != 0) {
            flags |= kFlagHasXattr;
            break;
        }
    }
    ext.s_flags = flags;
    ext.s_blob_table_offset = blob_table_offset_;
    ext.s_blob_table_size = static_cast<uint32_t>(blobs_.size() * sizeof(BlobTableEntry));
    ext.s_chunk_size = options_.chunk_size;
    ext.s_chunk_table_offset = chunk_table_offset_;
    ext.s_chunk_table_size = chunk_table_entries_ * sizeof(ChunkInfo);
    ext.s_prefetch_table_offset = prefetch_nids_.empty() ? 0 : prefetch_offset_;
    ext.s_prefetch_table_size = static_cast<uint32_t>(prefetch_nids_.size() * 4);
    std::memcpy(image.data() + kExtSuperOffset, &ext, sizeof(ext));
}

void Layout::write(const std::filesystem::path& path) {
    if (blobs_.size() > kMaxBlobs) fail("{} layers with data exceed the limit of {}", blobs_.size(), kMaxBlobs);
    order(tree_.root());
    countLinks();
    uint32_t ino = 1;
    for (Record& r : records_) {
        r.inode->ino = ino++;
        if (r.dir != nullptr) {
            std::vector<DirectoryEntry> entries;
            entries.push_back({".", 0, erofs::kFtDirectory});
            entries.push_back({"..", 0, erofs::kFtDirectory});
            for (auto& [name, child] : r.dir->children) {
                entries.push_back({name, 0, fileType(child->inode->mode)});
            }
            r.dirents.emplace(std::move(entries));
        }
        if (r.dirents) r.data_size = r.dirents->size();
        else if (r.inode->isLink()) r.data_size = r.inode->symlink_target.size();
    }
    chooseInodeFormats();
    place();
    // Directory entries can name nids only now that every inode is placed.
    for (Record& r : records_) {
        if (!r.dirents) continue;
        const Node* parent = r.dir->parent != nullptr ? r.dir->parent : r.dir;
        for (DirectoryEntry& e : r.dirents->entries()) {
            if (e.name == ".") e.nid = r.inode->nid;
            else if (e.name == "..") e.nid = parent->inode->nid;
            else e.nid = r.dir->children.at(e.name)->inode->nid;
        }
    }
    for (const std::string& p : options_.prefetch_paths) {
        Node* n = tree_.find(p);
        if (n == nullptr) fail("prefetch list: {} is not in the image", rafs::quote(p));
        if (n->inode->nid > UINT32_MAX) fail("prefetch list: {} has a nid beyond 32 bits", rafs::quote(p));
        prefetch_nids_.push_back(static_cast<uint32_t>(n->inode->nid));
    }

    std::vector<uint8_t> image(total_size_, 0);
    for (const Record& r : records_) encodeInode(image, r);
    encodeTables(image);
    OutputFile out(path);
    out.write(image);
    out.commit();
}

}  // namespace

void writeBootstrap(FileTree& tree, const std::vector<BlobInfo>& blobs,
                    const BootstrapOptions& options, const std::filesystem::path& path) {
    Layout(tree, blobs, options).write(path);
}

}  // namespace rafs::build
