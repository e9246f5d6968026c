// EROFS inodes, directories and inline xattrs of a RAFS v6 bootstrap held in memory
// (rafs-v6.md §1.3-1.8, §2.2, §2.7). Every offset, size and count read from the image is
// bounds-checked: a malformed bootstrap gives an Error naming the image and the nid, never a
// crash or an endless loop.
#pragma once

#include "kernel-abi/rafs.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rafs {

// One chunk of a regular file, decoded from its 8-byte chunk index.
struct InodeChunk {
    uint32_t blob_index = 0;           // (device_id & 0xff) - 1
    uint32_t ci_index = 0;             // advise | (device_id >> 8) << 16
    uint64_t uncompressed_offset = 0;  // blkaddr * 4096, in the blob's uncompressed space
    uint64_t file_offset = 0;
    uint32_t length = 0;               // bytes of the file in this chunk
};

// A parsed inode. Compact inodes take mtime from the superblock's build time, as the kernel does.
struct Inode {
    uint64_t nid = 0;
    bool extended = false;
    erofs::DataLayout layout = erofs::kFlatPlain;
    uint16_t mode = 0;  // st_mode: file type and permission bits
    uint32_t uid = 0;
    uint32_t gid = 0;
    uint64_t size = 0;
    uint64_t mtime = 0;
    uint32_t mtime_nsec = 0;
    uint32_t nlink = 0;
    uint32_t ino = 0;
    uint32_t rdev = 0;  // new_encode_dev form (erofs::devMajor/devMinor); devices only
    std::vector<std::pair<std::string, std::string>> xattrs;  // full names, on-disk order
    std::vector<InodeChunk> chunks;  // CHUNK_BASED regular files: ceil(size / chunk size) entries
    uint16_t chunk_format = 0;       // CHUNK_BASED: i_u's format (the kernel's chunk size bits)
    uint32_t raw_blkaddr = 0;        // flat layouts: first block of the data in the bootstrap
    uint64_t inline_offset = 0;      // byte offset right after inode and xattrs (inline tail)

    // The bytes of the data kept at inline_offset rather than in blocks: FLAT_INLINE keeps its
    // last block's worth there, also a whole block when the size is a multiple of one, as the
    // kernel maps it (fs/erofs/data.c, erofs_map_blocks_flatmode()); 0 for other layouts.
    uint64_t inlineTail() const;
    bool isDir() const;
    bool isReg() const;
    bool isLink() const;
    bool isDevice() const;
};

struct DirEntry {
    std::string name;
    uint64_t nid = 0;
    uint8_t file_type = erofs::kFtUnknown;
};

// What the inode reader needs from the image-level tables.
struct InodeGeometry {
    uint32_t meta_blkaddr = 0;
    uint32_t chunk_size = 0;          // the superblock's: nydusd indexes with it, not chunkbits
    uint64_t build_time = 0;          // mtime of compact inodes
    uint32_t build_time_nsec = 0;
    struct Blob {
        uint32_t chunk_count = 0;
        uint64_t uncompressed_size = 0;
    };
    std::vector<Blob> blobs;          // to range-check chunk indexes
};

class InodeReader {
public:
    // `image` must outlive the reader; `name` is used in messages.
    InodeReader(std::span<const uint8_t> image, std::string name, InodeGeometry geometry);

    // Parses and checks the inode: format and layout bits, mode, xattrs, and for chunk-based files
    // every chunk index (blob and ci index in range, chunk inside the blob's uncompressed size).
    Inode inode(uint64_t nid) const;

    // Entries of a directory, "." and ".." included, in on-disk (bytewise sorted) order. Checks
    // every nameoff, name length and the sort order across blocks.
    std::vector<DirEntry> readDir(uint64_t nid) const;
    std::vector<DirEntry> readDir(const Inode& dir) const;

    // Data of a FLAT_PLAIN or FLAT_INLINE inode (directory blocks, symlink target); Error for
    // other layouts.
    std::vector<uint8_t> readData(const Inode& inode) const;

    // Resolves a '/'-separated path from `root_nid` without following symlinks. nullopt if a
    // component is missing or a non-final component is not a directory.
    std::optional<uint64_t> lookup(uint64_t root_nid, std::string_view path) const;

    // Calls fn(path, inode) for every entry reachable from `root_nid` (root path "/"), parents
    // before children, children in name order; "." and ".." are checked (they must name the
    // directory and its parent) but not reported; the '..' of `root_nid` must name `root_parent`
    // (the image's root names itself), or any directory if that is not given (a subtree).
    // Hardlinked files are reported once per path. Throws Error on a directory reached twice (a
    // cycle or a hardlinked directory) and on a dirent whose file type disagrees with the inode's
    // mode.
    void walk(uint64_t root_nid, const std::function<void(const std::string&, const Inode&)>& fn,
              std::optional<uint64_t> root_parent = std::nullopt) const;

private:
    std::span<const uint8_t> image_;
    std::string name_;
    InodeGeometry geo_;
};

}  // namespace rafs
