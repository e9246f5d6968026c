// mkrafs build: sources -> file tree -> chunk pipeline -> blobs + bootstrap.
#pragma once

#include "builder/tree/FileTree.h"
#include "builder/writer/BlobWriter.h"
#include "builder/writer/BuildOptions.h"
#include "builder/writer/ChunkSink.h"

#include <filesystem>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace rafs::build {

// Builds OUTPUT/image.boot and OUTPUT/blobs/<blob-id>. Nothing appears under OUTPUT unless the
// whole build succeeds: everything is staged in a temporary directory inside OUTPUT first.
// Prints a one-line summary per blob and for the bootstrap to `log`.
void build(const BuildOptions& options, std::ostream& log);

// One source layer: `apply` adds it to the tree as layer `layer`, sending file contents to the sink.
struct LayerInput {
    std::string name;  // for the log
    std::function<void(FileTree& tree, ChunkSink& sink, unsigned layer)> apply;
};

struct BuiltImage {
    // The layers' blobs in DIR/blobs/<id> (layers with no new chunk have none), then the chunk
    // dict's blobs that are referenced (path empty: they are the dict image's).
    std::vector<BlobInfo> blobs;
    // For each layer, lowest first: whether it has a blob (the first blobs, in order).
    std::vector<bool> layer_has_blob;
    std::filesystem::path bootstrap;   // DIR/image.boot
    size_t unique_chunks = 0;
    size_t dict_chunks_used = 0;       // distinct chunk dict chunks the image references
};

// The build itself, into `dir` (which must exist): the layers lowest first, chunks deduplicated
// across all of them, then the bootstrap. Options' `sources` and `output` are not used.
// `report` gets one line per layer; `blob_done`, if given, each layer's blob as soon as it is
// complete (in DIR/blobs, as the result will list it), so that it can be uploaded while later
// layers build.
BuiltImage buildLayers(const BuildOptions& options, const std::vector<LayerInput>& layers,
                       const std::filesystem::path& dir, const std::function<void(const std::string&)>& report,
                       const std::function<void(const BlobInfo&)>& blob_done = {});

}  // namespace rafs::build
