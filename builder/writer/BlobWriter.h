// Writes one data blob: chunk data, then the tail sections Nydus readers expect (ci array with
// its 4 KiB header, chunk digests, ToC), each followed by a 512-byte tar header. The blob's id
// is the sha256 of the whole file, so it is named only once complete.
#pragma once

#include "format/ChunkInfoCodec.h"
#include "format/Digest.h"
#include "builder/tree/Inode.h"
#include "builder/writer/OutputFile.h"

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace rafs::build {

struct BlobInfo {
    std::string id;  // sha256 hex of the file = device tag = blob table id
    uint32_t index = 0;
    BlobTableEntry entry{};  // complete but for blob_index, which the bootstrap writer sets
    std::filesystem::path path;
    // Every chunk the blob stores, by ci index, also those no file of the image uses (a layer's
    // files that upper layers replace). Empty for a chunk dict's blobs, whose chunks are elsewhere.
    std::vector<ChunkRef> chunks;
};

class BlobWriter {
public:
    // Writes into `dir`, which must exist, under a temporary name until finish().
    BlobWriter(std::filesystem::path dir, uint32_t index, uint32_t chunk_size,
               Compressor compressor, Digester digester);
    // Removes the temporary file unless finish() completed.
    ~BlobWriter();
    BlobWriter(const BlobWriter&) = delete;
    BlobWriter& operator=(const BlobWriter&) = delete;

    // Appends a chunk's stored bytes (compressed or raw). Returns its location.
    ChunkRef append(std::span<const uint8_t> stored, bool compressed, uint32_t uncompressed_size,
                    const Digest& digest);

    // Moves the chunks `first` (ci indexes, in that order; repeats ignored) to the front of the
    // blob, the others following in their order, and renumbers every chunk by its new place, so
    // that offsets and ci indexes stay ascending together as Nydus's readers expect. Returns each
    // chunk's new location, indexed by its old ci index. The data is copied once.
    std::vector<ChunkRef> placeFirst(std::span<const uint32_t> first);

    uint32_t chunkCount() const { return static_cast<uint32_t>(chunks_.size()); }
    uint32_t index() const { return index_; }

    // Writes the tail sections, syncs, and renames the file to its id within `dir`.
    BlobInfo finish();

private:
    // Where chunk `ci` is, as the tree and the dictionary refer to it.
    ChunkRef refOf(uint32_t ci) const;
    void writeSection(std::string_view name, std::span<const uint8_t> content);

    std::filesystem::path dir_;
    uint32_t index_;
    uint32_t chunk_size_;
    Compressor compressor_;
    Digester digester_;
    std::unique_ptr<OutputFile> file_;
    std::filesystem::path temp_path_;
    bool finished_ = false;
    Hasher file_hash_{Digester::Sha256};  // the blob id; up to the data's tar header, the ToC digest of image.blob
    std::vector<BlobChunk> chunks_;
    std::vector<Digest> digests_;
    uint64_t uncompressed_end_ = 0;
};

}  // namespace rafs::build
