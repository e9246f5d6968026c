// A local data blob file read through its bootstrap's blob table entry (rafs-v6.md §3): the ci
// array with its 4 KiB header, the tail sections and ToC when present, and chunk data.
#pragma once

#include "format/BlobSections.h"
#include "format/Bootstrap.h"
#include "format/ChunkInfoCodec.h"
#include "format/Digest.h"
#include "format/InputFile.h"
#include "kernel-abi/rafs.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rafs {

class BlobFile {
public:
    // Opens the blob and reads `ci_compressed_size + 4096` bytes at `ci_offset`: the header must
    // pass checkBlobMetaHeader, the array must decompress with ci_compressor and decode, and every
    // chunk must lie within the compressed data and the uncompressed size. Peels the tail
    // sections (blobs with tar headers) and parses the ToC if there is one; with a blob_toc_size
    // in the entry, the ToC must be there and have that size. Throws Error naming the blob.
    BlobFile(std::string path, const BlobTableEntry& entry);

    const std::string& path() const { return file_.path(); }
    const std::string& id() const { return id_; }
    const BlobTableEntry& entry() const { return entry_; }
    uint64_t fileSize() const { return file_.size(); }
    // End of the compressed chunk data: ci_offset, less the image.blob tar header with
    // HAS_TAR_HEADER (BlobInfo::compressed_data_size in nydus).
    uint64_t dataEnd() const { return data_end_; }
    const BlobMetaHeader& metaHeader() const { return meta_header_; }
    const std::vector<BlobChunk>& chunks() const { return chunks_; }
    const std::vector<Section>& sections() const { return sections_; }
    const std::vector<TocEntry>& toc() const { return toc_; }
    const Section* section(std::string_view name) const;
    const TocEntry* tocEntry(std::string_view name) const;

    std::vector<uint8_t> read(uint64_t offset, uint64_t size) const { return file_.read(offset, size); }

    // Reads and decompresses one chunk into `out` (resized to its uncompressed size). The chunk
    // must lie within the compressed data. No digest check: see chunkDigests().
    void readChunk(const BlobChunk& chunk, std::vector<uint8_t>& out) const;

    // Content of a ToC entry, decompressed per its flags and checked against its uncompressed
    // size (up to 1 GiB); the sha256 is the caller's to check.
    std::vector<uint8_t> extract(const TocEntry& entry) const;

    // The "blob.digest" section (INLINED_CHUNK_DIGEST): one digest per ci entry, or nullopt if
    // the blob has none. Throws Error if its size is not 32 bytes per chunk.
    std::optional<std::vector<Digest>> inlinedDigests() const;

private:
    InputFile file_;
    BlobTableEntry entry_;
    std::string id_;
    Compressor compressor_ = Compressor::None;
    uint64_t data_end_ = 0;
    BlobMetaHeader meta_header_{};
    std::vector<BlobChunk> chunks_;
    std::vector<Section> sections_;
    std::vector<TocEntry> toc_;
};

// The expected digest of each ci entry of `blob`, from its blob.digest section and from the
// bootstrap's chunk info table; nullopt where neither has one. Throws Error naming the blob and
// ci index if the two sources disagree.
std::vector<std::optional<Digest>> expectedChunkDigests(const Bootstrap& bootstrap, const BlobFile& blob);

// A bootstrap as named on a command line: either a bootstrap file, or a blob whose tail holds an
// inline bootstrap (an "image.boot" ToC entry, as `nydus-image create --blob-inline-meta` writes).
// In the second case the blob itself is the file of the bootstrap's last blob table entry (a
// layer's own blob is appended after its parents').
struct Image {
    Bootstrap bootstrap;
    std::string path;          // as given: the bootstrap, or the blob holding it
    bool inline_meta = false;  // `path` is a blob with an inline bootstrap

    // Where blob `index` is read from: `path` itself for an inline blob's own entry, else
    // blob_dir/<id>, with blob_dir defaulting to the directory of `path`.
    std::string blobPath(uint32_t index, const std::string& blob_dir) const;
};
// Throws Error if `path` is neither a valid bootstrap nor a blob with a valid inline one.
Image openImage(const std::string& path);

}  // namespace rafs
