// A RAFS v6 bootstrap loaded into memory and validated as nydusd does when it mounts one
// (rafs-v6.md §2.1 "Rules nydusd checks", §8): superblock, extended superblock, device table,
// blob table, chunk info table and prefetch table. Inodes, directories and xattrs are parsed on
// demand by the InodeReader. Everything read from the file is bounds-checked, so untrusted
// bootstraps give an Error naming the file, never a crash.
#pragma once

#include "format/Digest.h"
#include "format/InodeReader.h"
#include "kernel-abi/rafs.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rafs {

// One blob table entry, checked against its device slot.
struct BootstrapBlob {
    std::string id;  // 64 hex characters = device tag
    uint32_t index = 0;
    uint32_t chunk_size = 0;
    uint32_t chunk_count = 0;
    Compressor compressor = Compressor::None;
    Digester digester = Digester::Blake3;
    uint32_t features = 0;
    uint64_t compressed_size = 0;
    uint64_t uncompressed_size = 0;
    Compressor ci_compressor = Compressor::None;
    uint64_t ci_offset = 0;
    uint64_t ci_compressed_size = 0;
    uint64_t ci_uncompressed_size = 0;
    uint32_t toc_size = 0;  // ToC bytes including its tar header; 0 if unknown
    Digest toc_digest{};    // sha256 of ToC entries and tar header; zeros if unknown
    uint32_t mapped_blkaddr = 0;
    BlobTableEntry entry{};  // as stored
};

// Blob features this reader does not implement (zran, separate meta blob, tarfs, batch,
// encryption): such blobs are rejected by name rather than misread.
inline constexpr uint32_t kUnsupportedBlobFeatures = kBlobZran | kBlobSeparate | kBlobTarfs | kBlobBatch | kBlobEncrypted;

// Numeric algorithm fields of blob tables and ci headers; throw Error naming the bad value.
Compressor compressorFromRaw(uint32_t value);
Digester digesterFromRaw(uint32_t value);

class Bootstrap {
public:
    // Reads and validates the file. A file that is not RAFS v6 gives
    // "<path>: not a RAFS v6 bootstrap (...)" naming what was found (RAFS v5 included).
    explicit Bootstrap(const std::string& path);
    // Validates an image already in memory; `name` stands for the file in messages.
    Bootstrap(std::vector<uint8_t> image, std::string name);

    Bootstrap(Bootstrap&&) noexcept = default;
    Bootstrap& operator=(Bootstrap&&) noexcept = default;
    Bootstrap(const Bootstrap&) = delete;
    Bootstrap& operator=(const Bootstrap&) = delete;

    const std::string& name() const { return name_; }
    std::span<const uint8_t> bytes() const { return image_; }
    const erofs::SuperBlock& superBlock() const { return sb_; }
    const SuperBlockExt& extSuperBlock() const { return ext_; }
    uint64_t flags() const { return ext_.s_flags; }
    Compressor compressor() const { return compressor_; }
    Digester digester() const { return digester_; }
    uint32_t chunkSize() const { return ext_.s_chunk_size; }
    uint64_t rootNid() const { return sb_.root_nid; }
    const std::vector<BootstrapBlob>& blobs() const { return blobs_; }
    // Prefetch table nids, up to the first unused (0) slot.
    const std::vector<uint32_t>& prefetchNids() const { return prefetch_; }
    // The chunk info table, each entry's blob and ci index already range-checked.
    const std::vector<ChunkInfo>& chunkInfos() const { return chunk_infos_; }

    const InodeReader& inodes() const { return inodes_; }
    Inode inode(uint64_t nid) const { return inodes_.inode(nid); }
    std::vector<DirEntry> readDir(uint64_t nid) const { return inodes_.readDir(nid); }
    std::vector<uint8_t> readData(uint64_t nid) const { return inodes_.readData(inodes_.inode(nid)); }
    std::optional<uint64_t> lookup(std::string_view path) const { return inodes_.lookup(rootNid(), path); }
    void walk(const std::function<void(const std::string&, const Inode&)>& fn) const {
        inodes_.walk(rootNid(), fn, rootNid());
    }

private:
    void load();
    void loadBlobTable();
    void loadChunkTable();
    void loadPrefetchTable();

    std::string name_;
    std::vector<uint8_t> image_;
    erofs::SuperBlock sb_{};
    SuperBlockExt ext_{};
    Compressor compressor_ = Compressor::None;
    Digester digester_ = Digester::Blake3;
    std::vector<BootstrapBlob> blobs_;
    std::vector<uint32_t> prefetch_;
    std::vector<ChunkInfo> chunk_infos_;
    InodeReader inodes_;
};

}  // namespace rafs
