// A local directory as a source layer.
#pragma once

#include "builder/tree/FileTree.h"
#include "builder/writer/ChunkSink.h"

#include <filesystem>

namespace rafs::build {

// Adds everything under `root` to `tree` as layer `layer`: root's own metadata replaces the tree
// root's, entries are visited parents first and in bytewise name order, and each regular file's
// content goes to `sink` in that order (hardlinks share one Inode and are sent once). OCI
// whiteouts apply as in a tar layer (FileTree::applyWhiteout) and are not added. Symlinks are
// not followed, not even `root` itself. Throws Error naming the path on any failure, including
// xattrs RAFS v6 cannot store. A directory under `root` that is `leave_out` (the build's own
// output, which holds its staging files while the walk runs) is left out with everything in it.
void addDirectory(const std::filesystem::path& root, FileTree& tree, ChunkSink& sink,
                  unsigned layer, const std::filesystem::path& leave_out = {});

}  // namespace rafs::build
