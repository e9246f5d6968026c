#include "builder/commands/Build.h"
#include "builder/commands/InterruptCleanup.h"
#include "builder/commands/RunDirectory.h"
#include "format/Codec.h"
#include "format/Error.h"
#include "builder/source/DirectorySource.h"
#include "builder/source/TarSource.h"
#include "builder/writer/BootstrapWriter.h"
#include "builder/writer/ChunkDict.h"
#include "builder/writer/ChunkPipeline.h"
#include "builder/writer/PrefetchLayout.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <ostream>
#include <set>
#include <unordered_set>
#include <unistd.h>

namespace fs = std::filesystem;

namespace rafs::build {

void validate(const BuildOptions& o) {
    if (o.output.empty()) fail("--output is required");
    if (o.sources.empty()) fail("no SOURCE given");
    if (o.chunk_size < kMinChunkSize || o.chunk_size > kMaxChunkSize ||
        (o.chunk_size & (o.chunk_size - 1)) != 0) {
        fail("--chunk-size {}: must be a power of two from 4 KiB to 16 MiB", o.chunk_size);
    }
    if (o.compressor == Compressor::Gzip) fail("--compressor gzip: not supported for building (none, zstd, lz4_block)");
    size_t stdin_sources = 0;
    for (const std::string& s : o.sources) {
        if (s == "-") {
            ++stdin_sources;
            continue;
        }
        std::error_code ec;
        if (!fs::exists(fs::symlink_status(s, ec))) fail("source '{}' does not exist", s);
    }
    if (stdin_sources > 1) fail("'-' (stdin) can be given as a source only once");
}

namespace {

std::vector<std::string> readPrefetchList(const std::string& path) {
    std::ifstream in(path);
    if (!in) failErrno("cannot open prefetch list " + path);
    std::vector<std::string> paths;
    std::string line;
    while (std::getline(in, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (line.empty() || line.front() == '#') continue;
        if (line.front() != '/') fail("prefetch list {}: {} is not an absolute path", path, rafs::quote(line));
        paths.push_back(line);
    }
    if (in.bad()) failErrno("reading prefetch list " + path);
    return paths;
}

// The staging directory and anything the build created, removed unless the build commits. The
// output dir must be new or empty: an image built over an old one would leave the old blobs in
// blobs/ beside the new, and replacing a whole dir the user named could delete anything. The
// staging directory of a build that was killed (RunDirectory) is not in the way.
class Staging {
public:
    Staging(const fs::path& output, std::ostream& log) : output_(output) {
        std::error_code ec;
        if (fs::is_directory(output_, ec)) {
            removeAbandonedRunDirectories(output_, kPrefix, log);
            std::vector<std::string> names;
            for (fs::directory_iterator it(output_, ec), end; !ec && it != end; it.increment(ec)) {
                names.push_back(it->path().filename().string());
            }
            if (ec) fail("cannot list output directory {}: {}", output_.string(), ec.message());
            if (!names.empty()) {
                std::sort(names.begin(), names.end());
                const size_t shown = std::min<size_t>(names.size(), 3);
                fail("output directory {} is not empty (it holds {}{}); remove it or choose another", output_.string(),
                     fmt::join(names.begin(), names.begin() + static_cast<ptrdiff_t>(shown), ", "),
                     names.size() > shown ? fmt::format(" and {} more", names.size() - shown) : "");
            }
        }
        const auto hold = holdInterrupts();
        const bool created = fs::create_directories(output_, ec);
        if (ec) fail("cannot create output directory {}: {}", output_.string(), ec.message());
        if (created) created_output_.emplace(output_);
        staging_.emplace(output_, kPrefix, "staging directory");
    }
    Staging(const Staging&) = delete;
    Staging& operator=(const Staging&) = delete;

    const fs::path& dir() const { return staging_->path(); }

    // Moves blobs, then the bootstrap that references them, into place.
    void commit(const std::vector<BlobInfo>& blobs) {
        const auto hold = holdInterrupts();
        std::error_code ec;
        fs::create_directories(output_ / "blobs", ec);
        if (ec) fail("cannot create {}: {}", (output_ / "blobs").string(), ec.message());
        for (const BlobInfo& b : blobs) {
            if (!b.path.empty()) move(b.path, output_ / "blobs" / b.id);
        }
        move(dir() / "image.boot", output_ / "image.boot");
        if (created_output_) created_output_->keep();
    }

private:
    static void move(const fs::path& from, const fs::path& to) {
        std::error_code ec;
        fs::rename(from, to, ec);
        if (ec) fail("cannot move {} to {}: {}", from.string(), to.string(), ec.message());
    }

    static constexpr std::string_view kPrefix = ".mkrafs-";
    fs::path output_;
    std::optional<RemovedUnlessKept> created_output_;  // the output dir, if this build made it
    std::optional<RunDirectory> staging_;              // inside it, removed first
};

bool isDirectory(const std::string& source) {
    std::error_code ec;
    return source != "-" && fs::is_directory(source, ec);
}

// Layers whose chunks all deduplicated against lower ones produce no blob, chunk dict blobs no
// chunk refers to are left out; renumber the rest.
void dropEmptyBlobs(FileTree& tree, std::vector<std::optional<BlobInfo>>& layers,
                    std::vector<BlobInfo>& blobs) {
    std::vector<uint32_t> new_index(layers.size(), 0);
    for (size_t i = 0; i < layers.size(); ++i) {
        if (!layers[i]) continue;
        new_index[i] = static_cast<uint32_t>(blobs.size());
        blobs.push_back(std::move(*layers[i]));
        blobs.back().index = new_index[i];
    }
    // Each inode once: renumbering a hardlinked file's chunks twice maps them on to another blob.
    tree.forEachInode([&](Inode& inode) {
        for (ChunkRef& c : inode.chunks) c.blob_index = new_index[c.blob_index];
    });
}

}  // namespace

BuiltImage buildLayers(const BuildOptions& options, const std::vector<LayerInput>& inputs, const fs::path& dir,
                       const std::function<void(const std::string&)>& report,
                       const std::function<void(const BlobInfo&)>& blob_done) {
    BootstrapOptions boot{options.chunk_size, options.compressor, options.digester, {}, options.chunk_table};
    if (options.prefetch_list) boot.prefetch_paths = readPrefetchList(*options.prefetch_list);
    std::error_code ec;
    fs::create_directories(dir / "blobs", ec);
    if (ec) fail("cannot create {}: {}", (dir / "blobs").string(), ec.message());

    FileTree tree;
    ChunkDictionary dictionary;
    std::optional<ChunkDict> dict;
    if (options.chunk_dict) {
        dict = ChunkDict::load(*options.chunk_dict, options);
        // Dict blobs are numbered after the layers' until dropEmptyBlobs renumbers.
        for (ChunkRef ref : dict->chunks) {
            ref.blob_index += static_cast<uint32_t>(inputs.size());
            dictionary.insert(ref);
        }
    }
    std::vector<std::optional<BlobInfo>> layers;
    size_t stored_chunks = 0;  // chunks the layers' blobs store (not those a chunk dict had)
    for (size_t i = 0; i < inputs.size(); ++i) {
        const auto layer = static_cast<uint32_t>(i);
        BlobWriter blob(dir / "blobs", layer, options.chunk_size, options.compressor, options.digester);
        {
            ChunkPipeline pipeline(blob, dictionary, options);
            inputs[i].apply(tree, pipeline, layer);
            pipeline.finish();
        }
        if (options.prefetch_first) placePrefetchFirst(boot.prefetch_paths, tree, dictionary, blob);
        stored_chunks += blob.chunkCount();
        if (blob.chunkCount() == 0) {
            layers.emplace_back();
            report(fmt::format("layer {}: {}: no new chunks, no blob", i, inputs[i].name));
            continue;
        }
        layers.push_back(blob.finish());
        const BlobTableEntry& e = layers.back()->entry;
        report(fmt::format("layer {}: {}: blob {} ({} chunks, {} bytes, {} uncompressed)", i, inputs[i].name,
                           layers.back()->id, e.chunk_count, e.compressed_size, e.uncompressed_size));
        if (blob_done) blob_done(*layers.back());
    }
    BuiltImage image;
    for (const auto& layer : layers) image.layer_has_blob.push_back(layer.has_value());
    if (dict) {
        std::vector<bool> used(dict->blobs.size(), false);
        std::set<Digest> used_chunks;
        tree.walk([&](Node& n, const std::string&) {
            for (const ChunkRef& c : n.inode->chunks) {
                if (c.blob_index < inputs.size()) continue;
                used[c.blob_index - inputs.size()] = true;
                used_chunks.insert(c.digest);
            }
        });
        for (size_t k = 0; k < dict->blobs.size(); ++k) {
            layers.push_back(used[k] ? std::optional<BlobInfo>(dict->blobs[k]) : std::nullopt);
        }
        image.dict_chunks_used = used_chunks.size();
        report(fmt::format("chunk dict {}: {} chunks referenced in {} of its {} blobs", dict->name,
                           used_chunks.size(), std::count(used.begin(), used.end(), true), dict->blobs.size()));
    }
    dropEmptyBlobs(tree, layers, image.blobs);
    if (options.mtime) {
        tree.walk([&](Node& n, const std::string&) {
            n.inode->mtime_sec = *options.mtime;
            n.inode->mtime_nsec = 0;
        });
    }
    // A trace recorded on an earlier version of the image may name what this one lacks: left out
    // and said, as the prefetch table is a hint (Nydus ignores such paths too). Each inode once: a
    // list may name a path twice, or two names of one file. A path through symlinks (/lib/x
    // where /lib -> usr/lib, as in every merged-/usr image) stands for what a reader opening it
    // reads, and is kept under that entry's own path.
    std::vector<std::string> present;
    std::vector<std::string> absent;
    std::unordered_set<const Inode*> listed;
    for (const std::string& p : boot.prefetch_paths) {
        const Node* n = tree.resolve(p);
        if (n == nullptr) absent.push_back(p);
        else if (listed.insert(n->inode.get()).second) present.push_back(FileTree::pathOf(*n));
    }
    if (!absent.empty()) {
        report(fmt::format("prefetch list: {} of its paths are not in the image, left out (the first: {})",
                           absent.size(), rafs::quote(absent.front())));
    }
    boot.prefetch_paths = std::move(present);
    image.bootstrap = dir / "image.boot";
    writeBootstrap(tree, image.blobs, boot, image.bootstrap);
    // Not the dictionary's size less the dict's chunks: a Nydus dict lists a digest once per blob
    // holding it, and the dictionary keeps it once.
    image.unique_chunks = stored_chunks;
    return image;
}

void build(const BuildOptions& options, std::ostream& log) {
    validate(options);
    Staging staging(options.output, log);
    std::vector<LayerInput> inputs;
    for (const std::string& source : options.sources) {
        inputs.push_back({source, [&options, source](FileTree& tree, ChunkSink& sink, unsigned layer) {
                              if (isDirectory(source)) addDirectory(source, tree, sink, layer, options.output);
                              else addTar(source, tree, sink, layer);
                          }});
    }
    const BuiltImage image = buildLayers(options, inputs, staging.dir(), [&](const std::string& line) { log << line << "\n"; });
    staging.commit(image.blobs);
    log << fmt::format("bootstrap: {} ({} bytes, {} blobs, {} unique chunks)\n",
                       (fs::path(options.output) / "image.boot").string(),
                       fs::file_size(fs::path(options.output) / "image.boot"), image.blobs.size(), image.unique_chunks);
}

}  // namespace rafs::build
