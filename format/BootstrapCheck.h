// The metadata check of a RAFS v6 bootstrap: one check, run by `mkrafs inspect` and by rafsd before
// every mount, of what the kernel's EROFS driver and rafsd trust when they serve the image. It reads
// the bootstrap alone (no blob), so it costs milliseconds even for large images.
//
// Loading a Bootstrap already checks the superblock, the RAFS extended superblock, the device and
// blob tables and the chunk info and prefetch tables (Bootstrap.h), and each inode as it is parsed
// (InodeReader.h). The check adds the superblock and device-slot fields the kernel reads that
// loading leaves alone, then walks every inode reachable from the root, as the kernel would reach
// them through directories:
// - inodes: inside the inode area (not on the superblock or a table), i_nlink, i_size, the data
//   layout of each file type, xattr names;
// - regular files: chunk-based only (data anywhere else would not be vouched for by a chunk
//   digest); the chunk size bits of i_u against the superblock's chunk size (the kernel maps file
//   offsets with the former, rafsd and nydusd with the latter); every chunk index against the chunk
//   info table, which holds the digest rafsd verifies that chunk with;
// - directories: blocks in the bootstrap, names sorted, in bounds, without '/' or NUL, "." and
//   "..", dirent types against modes, no directory reached twice; symlinks: 1 to 4095 bytes, no NUL;
// - the prefetch table: every nid an inode reachable from the root.
#pragma once

#include "format/Bootstrap.h"
#include "format/ChunkInfoCodec.h"

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace rafs {

// A symlink target the kernel returns whole: below PATH_MAX with its NUL, within one block for
// fast symlinks (fs/erofs/inode.c, erofs_fill_symlink). The builder refuses longer ones too.
inline constexpr uint64_t kMaxSymlinkSize = erofs::kBlockSize - 1;

// A regular file's chunk index `k`, as the check read it (InodeChunk's fields checkChunkIndexes
// compares): what that check goes over instead of walking the tree again.
struct ChunkIndexRef {
    uint64_t nid = 0;
    uint64_t uncompressed_offset = 0;
    uint32_t k = 0;
    uint32_t blob_index = 0;
    uint32_t ci_index = 0;
    uint32_t length = 0;
};

struct BootstrapSummary {
    uint64_t inodes = 0;  // distinct nids reachable from the root
    // The chunk indexes of regular files, each inode once.
    std::vector<ChunkIndexRef> chunk_indexes;
};

// Throws Error "<bootstrap>: nid N (<path>): <field> ...: <what is wrong>" (fields of the image as
// a whole name no nid) at the first problem. `visit(path, inode)` is called for every path once its
// inode has passed, parents before children (hardlinked files once per path), so that a caller
// can print or cross-check while the check walks.
BootstrapSummary checkBootstrap(const Bootstrap& bootstrap,
                                const std::function<void(const std::string&, const Inode&)>& visit = {});

// The second stage, once the blobs' ci arrays are at hand (rafsd loads them to serve, inspect
// reads them from the blob files): every chunk index must name a ci entry at the same
// uncompressed offset and length, so that what the kernel reads at the index is the chunk rafsd
// verifies with that ci entry's digest. The chunk info table covers this for the bootstrap alone;
// images built without one rely on this stage. `ci_by_blob[i]` is blob i's ci array, empty for a
// blob that is not at hand. `checked` is what checkBootstrap returned for the same bootstrap (a
// summary of no inodes is a logic error: every checked bootstrap has its root).
// Throws Error "<bootstrap>: nid N (<path>): chunk K: ...".
void checkChunkIndexes(const Bootstrap& bootstrap, const BootstrapSummary& checked,
                       const std::vector<std::span<const BlobChunk>>& ci_by_blob);

}  // namespace rafs
