// Puts the data of the prefetch list's files at the front of a layer's blob, in list order, as
// Nydus's builder does for its prefetch files. A start trace read in that order is then a few
// contiguous ranges of each blob instead of chunks scattered through it, so the daemon's
// prefetch of the table is a handful of large requests that arrive in the order the start reads
// (docs/benchmarks.md, readiness with a start trace).
#pragma once

#include "builder/tree/FileTree.h"
#include "builder/writer/BlobWriter.h"
#include "builder/writer/ChunkDictionary.h"

#include <string>
#include <vector>

namespace rafs::build {

// Call once the layer's chunks are all in `blob` (the pipeline finished) and before
// blob.finish(). `paths` are the prefetch list's absolute paths: a directory stands for every
// regular file below it, in name order; symlinks on the way are followed (FileTree::resolve);
// paths not in the tree yet are skipped. Every reference
// to the blob's chunks (the tree's inodes, the dictionary) is pointed at the new places.
void placePrefetchFirst(const std::vector<std::string>& paths, FileTree& tree, ChunkDictionary& dictionary,
                        BlobWriter& blob);

}  // namespace rafs::build
