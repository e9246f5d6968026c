// Nydus's chunk dict (rafs-v6.md §7): the chunks of another RAFS image, read from its
// bootstrap's chunk info table, which a build references instead of storing again. Their blobs
// join the new image's blob table only if some chunk of it is used.
#pragma once

#include "builder/tree/Inode.h"
#include "builder/writer/BlobWriter.h"
#include "builder/writer/BuildOptions.h"

#include <string>
#include <vector>

namespace rafs::build {

struct ChunkDict {
    std::string name;               // the bootstrap's path, for messages
    std::vector<BlobInfo> blobs;    // path empty: they live in the dict image's backend
    std::vector<ChunkRef> chunks;   // blob_index into `blobs`

    // Throws Error naming `path` when it is no RAFS v6 bootstrap, has no chunk info table, or
    // was built with another chunk size, digester or compressor than `options`.
    static ChunkDict load(const std::string& path, const BuildOptions& options);
};

}  // namespace rafs::build
