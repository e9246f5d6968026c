// Lays out and writes the RAFS v6 bootstrap: EROFS superblock, RAFS extended superblock, device
// and blob tables, prefetch table, inodes with inline xattrs, chunk indexes and inline tails,
// directory and symlink blocks, and the chunk info table (rafs-v6.md §2).
#pragma once

#include "builder/tree/FileTree.h"
#include "builder/writer/BlobWriter.h"

#include <filesystem>
#include <string>
#include <vector>

namespace rafs::build {

struct BootstrapOptions {
    uint32_t chunk_size = kDefaultChunkSize;
    Compressor compressor = Compressor::Zstd;
    Digester digester = Digester::Blake3;
    std::vector<std::string> prefetch_paths;  // must exist in the tree
    // Nydus's chunk info table (80 bytes per unique chunk): nydusd's FUSE mode and nydus-image
    // merge/check need it; the kernel and rafsd do not (rafsd verifies chunk digests through
    // the blob's ToC, whose digest the blob table records).
    bool chunk_table = true;
};

// Writes the bootstrap of `tree` (whose chunk refs index `blobs`) to the new file `path`.
// Fills each inode's nid, ino and nlink.
void writeBootstrap(FileTree& tree, const std::vector<BlobInfo>& blobs,
                    const BootstrapOptions& options, const std::filesystem::path& path);

}  // namespace rafs::build
