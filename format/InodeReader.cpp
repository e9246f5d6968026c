#include "format/InodeReader.h"

#include "format/ByteView.h"
#include "format/Error.h"
#include "format/FileType.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace rafs {

namespace {

constexpr uint64_t kBlock = erofs::kBlockSize;
constexpr uint16_t kFormatKnownBits = 0x000F;  // version bit + 3 layout bits; 6.15+ bits excluded
constexpr uint16_t kChunkFormatKnownBits = erofs::kChunkFormatBlkbits | erofs::kChunkFormatIndexes;
// The parent of a walk's first directory when the caller does not know it (a subtree).
constexpr uint64_t kAnyParent = std::numeric_limits<uint64_t>::max();

// Full-name prefixes of the EROFS short xattr name indexes; nullptr for unknown indexes.
const char* xattrPrefix(uint8_t index) {
    switch (index) {
    case erofs::kXattrUser: return "user.";
    case erofs::kXattrPosixAclAccess: return "system.posix_acl_access";
    case erofs::kXattrPosixAclDefault: return "system.posix_acl_default";
    case erofs::kXattrTrusted: return "trusted.";
    case erofs::kXattrLustre: return "lustre.";
    case erofs::kXattrSecurity: return "security.";
    default: return nullptr;
    }
}

}  // namespace

uint64_t Inode::inlineTail() const {
    if (layout != erofs::kFlatInline || size == 0) return 0;
    return (size - 1) % kBlock + 1;
}

bool Inode::isDir() const { return S_ISDIR(mode); }
bool Inode::isReg() const { return S_ISREG(mode); }
bool Inode::isLink() const { return S_ISLNK(mode); }
bool Inode::isDevice() const { return S_ISCHR(mode) || S_ISBLK(mode); }

InodeReader::InodeReader(std::span<const uint8_t> image, std::string name, InodeGeometry geometry)
    : image_(image), name_(std::move(name)), geo_(std::move(geometry)) {
    // An empty reader (no image) is only a placeholder: every nid is out of range.
    if (!image_.empty() && (geo_.chunk_size < kMinChunkSize || !std::has_single_bit(geo_.chunk_size))) {
        fail("{}: invalid chunk size {:#x}", name_, geo_.chunk_size);
    }
}

Inode InodeReader::inode(uint64_t nid) const {
    const uint64_t base = uint64_t{geo_.meta_blkaddr} * kBlock;
    const uint64_t size = image_.size();
    if (nid > (std::numeric_limits<uint64_t>::max() - base) >> erofs::kInodeSlotBits ||
        !inBounds(base + (nid << erofs::kInodeSlotBits), sizeof(erofs::InodeCompact), size)) {
        fail("{}: nid {} is past the end of the image", name_, nid);
    }
    const uint64_t off = base + (nid << erofs::kInodeSlotBits);
    const auto format = loadAt<uint16_t>(image_, off);
    if ((format & ~kFormatKnownBits) != 0) {
        fail("{}: nid {}: unsupported i_format {:#x}", name_, nid, format);
    }
    Inode ino;
    ino.nid = nid;
    ino.extended = (format & 1) != 0;
    ino.layout = static_cast<erofs::DataLayout>(format >> erofs::kInodeLayoutShift);
    uint16_t icount = 0;
    uint32_t i_u = 0;
    // The fields both on-disk inode forms have, under the same names.
    auto common = [&](const auto& raw) {
        icount = raw.i_xattr_icount;
        ino.mode = raw.i_mode;
        ino.size = raw.i_size;
        i_u = raw.i_u;
        ino.ino = raw.i_ino;
        ino.uid = raw.i_uid;
        ino.gid = raw.i_gid;
        ino.nlink = raw.i_nlink;
    };
    uint64_t inode_size = 0;
    if (ino.extended) {
        inode_size = sizeof(erofs::InodeExtended);
        if (!inBounds(off, inode_size, size)) fail("{}: nid {}: extended inode truncated", name_, nid);
        const auto raw = loadAt<erofs::InodeExtended>(image_, off);
        common(raw);
        ino.mtime = raw.i_mtime;
        ino.mtime_nsec = raw.i_mtime_nsec;
    } else {
        inode_size = sizeof(erofs::InodeCompact);
        common(loadAt<erofs::InodeCompact>(image_, off));
        // Compact inodes carry no mtime: the superblock's build time stands for it.
        ino.mtime = geo_.build_time;
        ino.mtime_nsec = geo_.build_time_nsec;
    }
    if (ino.mtime_nsec >= 1'000'000'000) {
        fail("{}: nid {}: mtime nanoseconds {} out of range", name_, nid, ino.mtime_nsec);
    }
    if (direntFileType(ino.mode) == erofs::kFtUnknown) {
        fail("{}: nid {}: invalid file mode {:#o}", name_, nid, ino.mode);
    }
    if (ino.layout != erofs::kFlatPlain && ino.layout != erofs::kFlatInline &&
        ino.layout != erofs::kChunkBased) {
        fail("{}: nid {}: unsupported data layout {}", name_, nid, static_cast<unsigned>(ino.layout));
    }
    if (ino.layout == erofs::kChunkBased && !ino.isReg()) {
        fail("{}: nid {}: chunk-based layout on a non-regular file (mode {:#o})", name_, nid, ino.mode);
    }

    // Inline xattrs: header, shared ids (unused by RAFS, which has no shared xattr area), entries.
    const uint64_t xattr_off = off + inode_size;
    const uint64_t xattr_size = erofs::xattrIbodySize(icount);
    if (!inBounds(xattr_off, xattr_size, size)) {
        fail("{}: nid {}: {} bytes of inline xattrs run past the end of the image", name_, nid, xattr_size);
    }
    if (icount > 0) {
        const auto header = loadAt<erofs::XattrIbodyHeader>(image_, xattr_off);
        if (header.h_shared_count != 0) {
            fail("{}: nid {}: {} shared xattrs, but RAFS v6 has no shared xattr area", name_, nid,
                 header.h_shared_count);
        }
        const uint64_t end = xattr_off + xattr_size;
        uint64_t pos = xattr_off + sizeof(erofs::XattrIbodyHeader);
        while (pos < end) {
            if (end - pos < sizeof(erofs::XattrEntry)) {
                fail("{}: nid {}: truncated xattr entry at offset {}", name_, nid, pos);
            }
            const auto e = loadAt<erofs::XattrEntry>(image_, pos);
            const uint64_t body = uint64_t{e.e_name_len} + e.e_value_size;
            const uint64_t total = alignUp(sizeof(erofs::XattrEntry) + body, 4);
            if (total > end - pos) {
                fail("{}: nid {}: xattr entry at offset {} runs past the inline xattr area", name_, nid, pos);
            }
            const char* prefix = xattrPrefix(e.e_name_index);
            if (prefix == nullptr) {
                fail("{}: nid {}: unsupported xattr name index {:#x} at offset {}", name_, nid,
                     e.e_name_index, pos);
            }
            const bool acl = e.e_name_index == erofs::kXattrPosixAclAccess ||
                             e.e_name_index == erofs::kXattrPosixAclDefault;
            if (e.e_name_len == 0 && !acl) {
                fail("{}: nid {}: xattr with an empty name at offset {}", name_, nid, pos);
            }
            const auto* name_bytes = reinterpret_cast<const char*>(image_.data() + pos + sizeof(erofs::XattrEntry));
            std::string name = prefix;
            name.append(name_bytes, e.e_name_len);
            std::string value(name_bytes + e.e_name_len, e.e_value_size);
            ino.xattrs.emplace_back(std::move(name), std::move(value));
            pos += total;
        }
    }
    ino.inline_offset = xattr_off + xattr_size;

    if (ino.isDevice()) {
        ino.rdev = i_u;
    } else if (ino.layout == erofs::kChunkBased) {
        const uint16_t chunk_format = static_cast<uint16_t>(i_u);
        if ((chunk_format & erofs::kChunkFormatIndexes) == 0 || (chunk_format & ~kChunkFormatKnownBits) != 0) {
            fail("{}: nid {}: chunk format {:#x} is not RAFS (8-byte indexes, no 48-bit addresses)",
                 name_, nid, chunk_format);
        }
        ino.chunk_format = chunk_format;
        const uint64_t chunk_size = geo_.chunk_size;
        const uint64_t count = ino.size == 0 ? 0 : (ino.size - 1) / chunk_size + 1;
        const uint64_t array_off = alignUp(ino.inline_offset, sizeof(ChunkAddr));
        if (count > size / sizeof(ChunkAddr) || !inBounds(array_off, count * sizeof(ChunkAddr), size)) {
            fail("{}: nid {}: {} chunk indexes for size {} run past the end of the image", name_, nid,
                 count, ino.size);
        }
        ino.chunks.reserve(count);
        for (uint64_t i = 0; i < count; ++i) {
            const auto addr = loadAt<ChunkAddr>(image_, array_off + i * sizeof(ChunkAddr));
            InodeChunk c;
            c.file_offset = i * chunk_size;
            c.length = static_cast<uint32_t>(std::min(chunk_size, ino.size - c.file_offset));
            if (addr.c_blk_addr == erofs::kNullAddr) {
                fail("{}: nid {}: chunk {} is a hole, which RAFS does not use", name_, nid, i);
            }
            const unsigned device = addr.c_blob_addr_hi & 0xffu;
            if (device == 0 || device > geo_.blobs.size()) {
                fail("{}: nid {}: chunk {} names device {}, but the image has {} blobs", name_, nid, i,
                     device, geo_.blobs.size());
            }
            c.blob_index = device - 1;
            c.ci_index = uint32_t{addr.c_blob_addr_lo} | (uint32_t{addr.c_blob_addr_hi} >> 8) << 16;
            c.uncompressed_offset = uint64_t{addr.c_blk_addr} * kBlock;
            const InodeGeometry::Blob& blob = geo_.blobs[c.blob_index];
            if (c.ci_index >= blob.chunk_count) {
                fail("{}: nid {}: chunk {} has ci index {}, but blob {} has {} chunks", name_, nid, i,
                     c.ci_index, c.blob_index, blob.chunk_count);
            }
            if (!inBounds(c.uncompressed_offset, c.length, blob.uncompressed_size)) {
                fail("{}: nid {}: chunk {} at {:#x}+{} is outside blob {} ({} bytes uncompressed)", name_,
                     nid, i, c.uncompressed_offset, c.length, c.blob_index, blob.uncompressed_size);
            }
            ino.chunks.push_back(c);
        }
    } else {
        ino.raw_blkaddr = i_u;
    }
    return ino;
}

std::vector<uint8_t> InodeReader::readData(const Inode& ino) const {
    if (ino.layout != erofs::kFlatPlain && ino.layout != erofs::kFlatInline) {
        fail("{}: nid {}: data layout {} is not stored in the bootstrap", name_, ino.nid,
             static_cast<unsigned>(ino.layout));
    }
    const uint64_t size = image_.size();
    const uint64_t tail = ino.inlineTail();
    const uint64_t blocks_bytes = ino.size - tail;
    const uint64_t start = uint64_t{ino.raw_blkaddr} * kBlock;
    if (blocks_bytes > 0 && !inBounds(start, blocks_bytes, size)) {
        fail("{}: nid {}: {} data bytes at block {} run past the end of the image", name_, ino.nid,
             blocks_bytes, ino.raw_blkaddr);
    }
    if (tail > 0) {
        if (!inBounds(ino.inline_offset, tail, size)) {
            fail("{}: nid {}: inline tail of {} bytes runs past the end of the image", name_, ino.nid, tail);
        }
        if (ino.inline_offset % kBlock + tail > kBlock) {
            fail("{}: nid {}: inline tail of {} bytes at offset {} crosses a block boundary", name_,
                 ino.nid, tail, ino.inline_offset);
        }
    }
    std::vector<uint8_t> data;
    data.reserve(ino.size);
    data.insert(data.end(), image_.begin() + static_cast<ptrdiff_t>(start),
                image_.begin() + static_cast<ptrdiff_t>(start + blocks_bytes));
    data.insert(data.end(), image_.begin() + static_cast<ptrdiff_t>(ino.inline_offset),
                image_.begin() + static_cast<ptrdiff_t>(ino.inline_offset + tail));
    return data;
}

std::vector<DirEntry> InodeReader::readDir(uint64_t nid) const { return readDir(inode(nid)); }

std::vector<DirEntry> InodeReader::readDir(const Inode& dir) const {
    if (!dir.isDir()) fail("{}: nid {} is not a directory", name_, dir.nid);
    const std::vector<uint8_t> data = readData(dir);
    if (data.empty()) fail("{}: nid {}: empty directory (no '.' and '..')", name_, dir.nid);
    const std::span<const uint8_t> all(data);
    std::vector<DirEntry> entries;
    for (uint64_t block = 0; block < data.size(); block += kBlock) {
        const auto blk = all.subspan(block, std::min<uint64_t>(kBlock, data.size() - block));
        const auto where = [&] { return fmt::format("{}: nid {}: directory block {}", name_, dir.nid, block / kBlock); };
        if (blk.size() < sizeof(erofs::Dirent)) fail("{}: {} bytes hold no dirent", where(), blk.size());
        const uint16_t names_start = loadAt<erofs::Dirent>(blk, 0).nameoff;
        if (names_start < sizeof(erofs::Dirent) || names_start % sizeof(erofs::Dirent) != 0 ||
            names_start > blk.size()) {
            fail("{}: first nameoff {} out of bounds ({} bytes)", where(), names_start, blk.size());
        }
        const size_t count = names_start / sizeof(erofs::Dirent);
        for (size_t k = 0; k < count; ++k) {
            const auto d = loadAt<erofs::Dirent>(blk, k * sizeof(erofs::Dirent));
            const bool last = k + 1 == count;
            const uint64_t name_end =
                last ? blk.size() : loadAt<erofs::Dirent>(blk, (k + 1) * sizeof(erofs::Dirent)).nameoff;
            if (d.nameoff < names_start || name_end < d.nameoff || name_end > blk.size()) {
                fail("{}: dirent {} name at {}..{} out of bounds (names {}..{})", where(), k, d.nameoff,
                     name_end, names_start, blk.size());
            }
            std::string_view name(reinterpret_cast<const char*>(blk.data() + d.nameoff), name_end - d.nameoff);
            if (last) name = name.substr(0, name.find('\0'));  // the last name is NUL-padded
            if (name.empty() || name.size() > erofs::kNameLen || name.find_first_of(std::string_view("/\0", 2)) != name.npos) {
                fail("{}: dirent {} has an invalid name", where(), k);
            }
            if (d.file_type > erofs::kFtSymlink) {
                fail("{}: dirent {:?} has invalid file type {}", where(), name, d.file_type);
            }
            if (!entries.empty() && !(entries.back().name < name)) {
                fail("{}: dirent {:?} is out of order after {:?}", where(), name, entries.back().name);
            }
            entries.push_back(DirEntry{std::string(name), d.nid, d.file_type});
        }
    }
    return entries;
}

std::optional<uint64_t> InodeReader::lookup(uint64_t root_nid, std::string_view path) const {
    uint64_t nid = root_nid;
    while (!path.empty()) {
        const size_t slash = path.find('/');
        const std::string_view component = path.substr(0, slash);
        path = slash == path.npos ? std::string_view() : path.substr(slash + 1);
        if (component.empty()) continue;
        const Inode dir = inode(nid);
        if (!dir.isDir()) return std::nullopt;
        const std::vector<DirEntry> entries = readDir(dir);
        const auto it = std::lower_bound(entries.begin(), entries.end(), component,
                                         [](const DirEntry& e, std::string_view n) { return e.name < n; });
        if (it == entries.end() || it->name != component) return std::nullopt;
        nid = it->nid;
    }
    return nid;
}

void InodeReader::walk(uint64_t root_nid, const std::function<void(const std::string&, const Inode&)>& fn,
                       std::optional<uint64_t> root_parent) const {
    struct Pending {
        uint64_t nid;
        uint64_t parent;
        std::string path;
        uint8_t file_type;  // from the dirent; unused for the root
        bool is_root;
    };
    std::unordered_set<uint64_t> dirs_seen;
    // A file linked many times is parsed at most twice (its chunk array may be large), not once
    // per link: met a second time, it is kept.
    std::unordered_set<uint64_t> files_seen;
    std::unordered_map<uint64_t, Inode> linked;
    // An explicit stack: nesting depth comes from the image and must not exhaust ours.
    std::vector<Pending> stack{{root_nid, root_parent.value_or(kAnyParent), "/", erofs::kFtDirectory, true}};
    while (!stack.empty()) {
        Pending p = std::move(stack.back());
        stack.pop_back();
        Inode parsed;
        const Inode* found = nullptr;
        if (const auto it = linked.find(p.nid); it != linked.end()) {
            found = &it->second;
        } else {
            parsed = inode(p.nid);
            const bool again = !parsed.isDir() && !files_seen.insert(p.nid).second;
            found = again ? &linked.emplace(p.nid, std::move(parsed)).first->second : &parsed;
        }
        const Inode& ino = *found;
        if (p.file_type != direntFileType(ino.mode)) {
            if (p.is_root) fail("{}: root nid {} is not a directory", name_, p.nid);
            fail("{}: {:?}: dirent file type {} disagrees with nid {} mode {:#o}", name_, p.path,
                 p.file_type, p.nid, ino.mode);
        }
        if (ino.isDir() && !dirs_seen.insert(p.nid).second) {
            fail("{}: {:?}: directory nid {} is reached twice (cycle or hardlinked directory)", name_,
                 p.path, p.nid);
        }
        fn(p.path, ino);
        if (!ino.isDir()) continue;
        std::vector<DirEntry> entries = readDir(ino);
        bool dot = false;
        bool dotdot = false;
        std::vector<Pending> children;
        for (DirEntry& e : entries) {
            if (e.name == "." || e.name == "..") {
                const uint64_t expected = e.name == "." ? p.nid : p.parent;
                if ((e.nid != expected && expected != kAnyParent) || e.file_type != erofs::kFtDirectory) {
                    fail("{}: {:?}: '{}' names nid {}, expected directory nid {}", name_, p.path, e.name,
                         e.nid, expected);
                }
                (e.name == "." ? dot : dotdot) = true;
                continue;
            }
            std::string path = p.path == "/" ? "/" + e.name : p.path + "/" + e.name;
            children.push_back(Pending{e.nid, p.nid, std::move(path), e.file_type, false});
        }
        if (!dot || !dotdot) fail("{}: {:?}: directory nid {} lacks '.' or '..'", name_, p.path, p.nid);
        std::move(children.rbegin(), children.rend(), std::back_inserter(stack));
    }
}

}  // namespace rafs
