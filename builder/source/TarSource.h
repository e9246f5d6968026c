// A tar layer (an OCI image layer or any tar) as a source layer.
#pragma once

#include "builder/source/ByteSource.h"
#include "builder/tree/FileTree.h"
#include "builder/writer/ChunkSink.h"

#include <memory>
#include <string>

namespace rafs::build {

// Applies the tar at `input` ("-" for stdin; plain, gzip or zstd; ustar, GNU or pax; an empty
// input is an empty layer) to `tree` as layer `layer`, sending regular files' contents to `sink`
// in archive order. OCI whiteouts remove lower layers' entries and are not added themselves:
// ".wh.NAME" removes NAME, ".wh..wh..opq" empties its directory of lower layers' entries.
// A member's parent directories, and a hardlink's target, are looked up in the merged tree with
// symlinks followed inside the root, as a runtime applying the layer does; missing parents are
// created (0755, root, mtime 0). POSIX ACLs become system.posix_acl_* xattrs. Throws Error naming
// the input and member for unsafe or unsupported members and for corrupt or truncated archives.
void addTar(const std::string& input, FileTree& tree, ChunkSink& sink, unsigned layer);
// The same from any byte source (a layer blob of an image being converted). `diff_id`, if not
// empty, is what the image's config says the uncompressed tar's digest is ("sha256:<hex>"):
// checked once the whole input is read, as container runtimes do when they unpack a layer.
void addTar(std::unique_ptr<ByteSource> input, FileTree& tree, ChunkSink& sink, unsigned layer,
            const std::string& diff_id = {});

}  // namespace rafs::build
