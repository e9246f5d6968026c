#include "format/BlobFile.h"

#include "format/ByteView.h"
#include "format/Codec.h"
#include "format/Error.h"

#include <cstring>
#include <filesystem>

namespace rafs {

namespace {

constexpr uint64_t kMaxExtractSize = 1ULL << 30;  // bounds the allocation a ToC entry can ask for

std::vector<Section> peel(const InputFile& file) {
    return peelSections([&](uint64_t offset, std::span<uint8_t> out) { file.readAt(offset, out); },
                        file.size());
}

std::vector<uint8_t> extractEntry(const InputFile& file, const TocEntry& e) {
    const std::string name = tocEntryName(e);
    if (!inBounds(e.compressed_offset, e.compressed_size, file.size())) {
        fail("{}: ToC entry '{}' at {}+{} is outside the file", file.path(), name, e.compressed_offset,
             e.compressed_size);
    }
    if (e.uncompressed_size > kMaxExtractSize) {
        fail("{}: ToC entry '{}' claims {} uncompressed bytes", file.path(), name, e.uncompressed_size);
    }
    const std::vector<uint8_t> stored = file.read(e.compressed_offset, e.compressed_size);
    std::vector<uint8_t> out(e.uncompressed_size);
    const Compressor c = e.flags == kTocZstd ? Compressor::Zstd
                         : e.flags == kTocLz4Block ? Compressor::Lz4Block
                                                   : Compressor::None;
    try {
        decompress(c, stored, out);
    } catch (const Error& err) {
        fail("{}: ToC entry '{}': {}", file.path(), name, err.what());
    }
    return out;
}

}  // namespace

BlobFile::BlobFile(std::string path, const BlobTableEntry& entry) : file_(std::move(path)), entry_(entry) {
    const char* raw_id = reinterpret_cast<const char*>(entry.blob_id);
    id_.assign(raw_id, strnlen(raw_id, sizeof(entry.blob_id)));
    const std::string where = fmt::format("blob {} ({})", id_, file_.path());
    const uint64_t size = file_.size();
    if (entry.features & kUnsupportedBlobFeatures) {
        fail("{}: unsupported features {:#x} (zran, separate, tarfs, batch, encrypted)", where, entry.features);
    }
    Compressor ci_compressor = Compressor::None;
    try {
        compressor_ = compressorFromRaw(entry.compression_algo);
        ci_compressor = compressorFromRaw(entry.ci_compressor);
    } catch (const Error& err) {
        fail("{}: {}", where, err.what());
    }
    const bool v2 = (entry.features & kBlobChunkInfoV2) != 0;
    const uint64_t entry_size = v2 ? sizeof(BlobChunkInfoV2) : sizeof(BlobChunkInfoV1);
    if (entry.chunk_count > kMaxChunksPerBlob || entry.ci_uncompressed_size != entry.chunk_count * entry_size) {
        fail("{}: ci size {} does not match {} chunks", where, entry.ci_uncompressed_size, entry.chunk_count);
    }
    if (!inBounds(entry.ci_offset, entry.ci_compressed_size, size) ||
        !inBounds(entry.ci_offset + entry.ci_compressed_size, sizeof(BlobMetaHeader), size)) {
        fail("{}: ci array {:#x}+{:#x} and its header do not fit the file ({} bytes)", where, entry.ci_offset,
             entry.ci_compressed_size, size);
    }
    const std::vector<uint8_t> meta = file_.read(entry.ci_offset, entry.ci_compressed_size + sizeof(BlobMetaHeader));
    meta_header_ = loadAt<BlobMetaHeader>(meta, entry.ci_compressed_size);
    checkBlobMetaHeader(meta_header_, entry);
    std::vector<uint8_t> ci(entry.ci_uncompressed_size);
    try {
        decompress(ci_compressor, std::span(meta).first(entry.ci_compressed_size), ci);
        chunks_ = decodeChunkInfoArray(ci, entry.chunk_count, v2);
    } catch (const Error& err) {
        fail("{}: ci array: {}", where, err.what());
    }

    const bool tar_headers = (entry.features & kBlobHasTarHeader) != 0;
    if (tar_headers && entry.ci_offset < sizeof(TarHeader)) fail("{}: ci offset {} leaves no room for chunk data", where, entry.ci_offset);
    data_end_ = tar_headers ? entry.ci_offset - sizeof(TarHeader) : entry.ci_offset;
    for (size_t i = 0; i < chunks_.size(); ++i) {
        const BlobChunk& c = chunks_[i];
        if (!inBounds(c.compressed_offset, c.compressed_size, data_end_)) {
            fail("{}: ci {} at {:#x}+{} is past the end of the chunk data ({:#x})", where, i, c.compressed_offset,
                 c.compressed_size, data_end_);
        }
        if (!inBounds(c.uncompressed_offset, c.uncompressed_size, entry.uncompressed_size)) {
            fail("{}: ci {} uncompressed {:#x}+{} is past the uncompressed size {}", where, i,
                 c.uncompressed_offset, c.uncompressed_size, entry.uncompressed_size);
        }
    }

    // Blobs written with --blob-inline-meta by 2.2-era Nydus have tar headers without the
    // HAS_TAR_HEADER feature, so peel in any case.
    try {
        sections_ = peel(file_);
    } catch (const Error& err) {
        fail("{}: {}", where, err.what());
    }
    if (tar_headers && sections_.empty()) fail("{}: HAS_TAR_HEADER is set but the blob ends in no tar header", where);
    if (!sections_.empty() && sections_.back().name == kTocNameToc) {
        try {
            toc_ = parseToc(file_.read(sections_.back().offset, sections_.back().size));
        } catch (const Error& err) {
            fail("{}: {}", where, err.what());
        }
    }
    if (toc_.empty() && (entry.blob_toc_size != 0 || (entry.features & kBlobHasToc))) {
        fail("{}: the blob table announces a ToC but the blob has none", where);
    }
    if (entry.blob_toc_size != 0 && sections_.back().size + sizeof(TarHeader) != entry.blob_toc_size) {
        fail("{}: ToC of {} bytes with its header, the blob table says {}", where,
             sections_.back().size + sizeof(TarHeader), entry.blob_toc_size);
    }
}

const Section* BlobFile::section(std::string_view name) const {
    for (const Section& s : sections_) {
        if (s.name == name) return &s;
    }
    return nullptr;
}

const TocEntry* BlobFile::tocEntry(std::string_view name) const {
    for (const TocEntry& e : toc_) {
        if (tocEntryName(e) == name) return &e;
    }
    return nullptr;
}

void BlobFile::readChunk(const BlobChunk& chunk, std::vector<uint8_t>& out) const {
    if (!inBounds(chunk.compressed_offset, chunk.compressed_size, data_end_)) {
        fail("blob {}: chunk at {:#x}+{} is past the end of the chunk data ({:#x})", id_,
             chunk.compressed_offset, chunk.compressed_size, data_end_);
    }
    const std::vector<uint8_t> stored = file_.read(chunk.compressed_offset, chunk.compressed_size);
    out.resize(chunk.uncompressed_size);
    try {
        decompress(chunk.compressed ? compressor_ : Compressor::None, stored, out);
    } catch (const Error& err) {
        fail("blob {}: chunk at compressed offset {:#x}+{}: {}", id_, chunk.compressed_offset,
             chunk.compressed_size, err.what());
    }
}

std::vector<uint8_t> BlobFile::extract(const TocEntry& entry) const { return extractEntry(file_, entry); }

std::optional<std::vector<Digest>> BlobFile::inlinedDigests() const {
    const Section* s = section(kTocNameBlobDigest);
    if (s == nullptr) return std::nullopt;
    if (s->size != uint64_t{entry_.chunk_count} * kDigestSize) {
        fail("blob {}: blob.digest holds {} bytes for {} chunks", id_, s->size, entry_.chunk_count);
    }
    return splitDigests(file_.read(s->offset, s->size));
}

std::vector<std::optional<Digest>> expectedChunkDigests(const Bootstrap& bootstrap, const BlobFile& blob) {
    std::vector<std::optional<Digest>> expected(blob.chunks().size());
    if (auto inlined = blob.inlinedDigests()) {
        for (size_t i = 0; i < expected.size(); ++i) expected[i] = (*inlined)[i];
    }
    for (const ChunkInfo& c : bootstrap.chunkInfos()) {
        if (c.blob_index != blob.entry().blob_index || c.index >= expected.size()) continue;
        Digest d;
        std::memcpy(d.data(), c.block_id, d.size());
        std::optional<Digest>& slot = expected[c.index];
        if (slot && *slot != d) {
            fail("blob {}: ci {}: the chunk table's digest {} differs from {}", blob.id(), c.index, toHex(d),
                 toHex(*slot));
        }
        slot = d;
    }
    return expected;
}

std::string Image::blobPath(uint32_t index, const std::string& blob_dir) const {
    if (inline_meta && index + 1 == bootstrap.blobs().size()) return path;
    const std::filesystem::path dir =
        blob_dir.empty() ? std::filesystem::path(path).parent_path() : std::filesystem::path(blob_dir);
    return (dir / bootstrap.blobs().at(index).id).string();
}

Image openImage(const std::string& path) {
    InputFile file(path);
    const std::vector<Section> sections = peel(file);
    if (!sections.empty() && sections.back().name == kTocNameToc) {
        const Section& toc_section = sections.back();
        for (const TocEntry& e : parseToc(file.read(toc_section.offset, toc_section.size))) {
            if (tocEntryName(e) != kTocNameImageBoot) continue;
            std::vector<uint8_t> boot = extractEntry(file, e);
            if (digestOf(Digester::Sha256, boot) != std::to_array(e.uncompressed_digest)) {
                fail("{}: inline bootstrap (image.boot) does not match its ToC sha256", path);
            }
            return Image{Bootstrap(std::move(boot), path + ":" + kTocNameImageBoot), path, true};
        }
    }
    return Image{Bootstrap(file.readAll(), path), path, false};
}

}  // namespace rafs
