#include "builder/writer/BlobWriter.h"
#include "format/ByteView.h"

#include "format/BlobSections.h"
#include "format/Codec.h"
#include "format/Error.h"
#include "format/InputFile.h"

#include <fmt/format.h>

#include <cstring>

namespace rafs::build {

namespace {

using rafs::alignUp;

uint32_t tocFlags(Compressor c) {
    switch (c) {
    case Compressor::Zstd: return kTocZstd;
    case Compressor::Lz4Block: return kTocLz4Block;
    default: return kTocNone;
    }
}

}  // namespace

BlobWriter::BlobWriter(std::filesystem::path dir, uint32_t index, uint32_t chunk_size,
                       Compressor compressor, Digester digester)
    : dir_(std::move(dir)), index_(index), chunk_size_(chunk_size), compressor_(compressor),
      digester_(digester) {
    temp_path_ = dir_ / fmt::format(".blob-{}.tmp", index);
    file_ = std::make_unique<OutputFile>(temp_path_);
}

BlobWriter::~BlobWriter() {
    if (!finished_) {
        std::error_code ignored;  // best effort: the build is failing already
        std::filesystem::remove(temp_path_, ignored);
    }
}

ChunkRef BlobWriter::append(std::span<const uint8_t> stored, bool compressed,
                            uint32_t uncompressed_size, const Digest& digest) {
    if (chunks_.size() >= kMaxChunksPerBlob) fail("layer {} has more than {} chunks", index_, kMaxChunksPerBlob);
    BlobChunk c;
    c.compressed_offset = file_->offset();
    c.compressed_size = static_cast<uint32_t>(stored.size());
    c.uncompressed_offset = uncompressed_end_;
    c.uncompressed_size = uncompressed_size;
    c.compressed = compressed;
    file_->write(stored);
    file_hash_.update(stored);
    uncompressed_end_ = alignUp(uncompressed_end_ + uncompressed_size, erofs::kBlockSize);
    chunks_.push_back(c);
    digests_.push_back(digest);
    return refOf(static_cast<uint32_t>(chunks_.size() - 1));
}

ChunkRef BlobWriter::refOf(uint32_t ci) const {
    const BlobChunk& c = chunks_[ci];
    ChunkRef ref;
    ref.blob_index = index_;
    ref.ci_index = ci;
    ref.uncompressed_offset = c.uncompressed_offset;
    ref.uncompressed_size = c.uncompressed_size;
    ref.compressed_offset = c.compressed_offset;
    ref.compressed_size = c.compressed_size;
    ref.compressed = c.compressed;
    ref.digest = digests_[ci];
    return ref;
}

std::vector<ChunkRef> BlobWriter::placeFirst(std::span<const uint32_t> first) {
    std::vector<uint32_t> order;
    order.reserve(chunks_.size());
    std::vector<bool> placed(chunks_.size(), false);
    for (uint32_t ci : first) {
        if (ci >= chunks_.size()) fail("blob {}: no chunk {} to place first", index_, ci);
        if (placed[ci]) continue;
        placed[ci] = true;
        order.push_back(ci);
    }
    for (uint32_t ci = 0; ci < chunks_.size(); ++ci) {
        if (!placed[ci]) order.push_back(ci);
    }

    file_->flush();
    const InputFile old_data(temp_path_.string());
    const std::filesystem::path new_path = dir_ / fmt::format(".blob-{}.layout.tmp", index_);
    auto new_file = std::make_unique<OutputFile>(new_path);
    Hasher new_hash(Digester::Sha256);
    std::vector<BlobChunk> new_chunks;
    std::vector<Digest> new_digests;
    std::vector<uint8_t> stored;
    uint64_t uncompressed_end = 0;
    try {
        for (uint32_t old_ci : order) {
            BlobChunk c = chunks_[old_ci];
            stored.resize(c.compressed_size);
            old_data.readAt(c.compressed_offset, stored);
            c.compressed_offset = new_file->offset();
            c.uncompressed_offset = uncompressed_end;
            new_file->write(stored);
            new_hash.update(stored);
            uncompressed_end = alignUp(uncompressed_end + c.uncompressed_size, erofs::kBlockSize);
            new_chunks.push_back(c);
            new_digests.push_back(digests_[old_ci]);
        }
        std::error_code ec;
        std::filesystem::remove(temp_path_, ec);
        if (ec) fail("cannot remove {}: {}", temp_path_.string(), ec.message());
    } catch (...) {
        new_file.reset();
        std::error_code ignored;  // best effort: the build is failing already
        std::filesystem::remove(new_path, ignored);
        throw;
    }
    file_ = std::move(new_file);
    temp_path_ = new_path;
    file_hash_ = std::move(new_hash);
    chunks_ = std::move(new_chunks);
    digests_ = std::move(new_digests);
    uncompressed_end_ = uncompressed_end;
    std::vector<ChunkRef> moved(chunks_.size());
    for (uint32_t ci = 0; ci < chunks_.size(); ++ci) moved[order[ci]] = refOf(ci);
    return moved;
}

void BlobWriter::writeSection(std::string_view name, std::span<const uint8_t> content) {
    file_->write(content);
    file_hash_.update(content);
    TarHeader header = makeSectionHeader(name, content.size());
    file_->write(bytesOf(header));
    file_hash_.update(bytesOf(header));
}

BlobInfo BlobWriter::finish() {
    const uint64_t data_size = file_->offset();
    std::vector<TocEntry> toc;

    TarHeader data_header = makeSectionHeader(kTocNameImageBlob, data_size);
    file_->write(bytesOf(data_header));
    file_hash_.update(bytesOf(data_header));
    // The ToC's digest of image.blob covers the data and its tar header: the file up to here.
    toc.push_back(makeTocEntry(kTocNameImageBlob, kTocNone, file_hash_.current(), 0, data_size,
                               uncompressed_end_));

    // The ci array, compressed with the blob's compressor when that pays off. ToC flags know
    // only none, zstd and lz4_block, so a gzip build keeps it raw.
    std::vector<uint8_t> ci_raw = encodeChunkInfoArray(chunks_, false);
    std::vector<uint8_t> ci_packed;
    Compressor ci_compressor = Compressor::None;
    if ((compressor_ == Compressor::Zstd || compressor_ == Compressor::Lz4Block) &&
        compress(compressor_, ci_raw, ci_packed)) {
        ci_compressor = compressor_;
    } else {
        ci_packed = ci_raw;
    }
    const uint32_t features = kBlobAligned | kBlobInlinedChunkDigest | kBlobHasTarHeader |
                              kBlobHasToc | kBlobCapTarToc;
    const uint64_t ci_offset = file_->offset();
    BlobMetaHeader meta_header = makeBlobMetaHeader(features, ci_compressor, chunkCount(), ci_offset,
                                                    ci_packed.size(), ci_raw.size());
    std::vector<uint8_t> meta(ci_packed);
    auto header_bytes = bytesOf(meta_header);
    meta.insert(meta.end(), header_bytes.begin(), header_bytes.end());
    writeSection(kTocNameBlobMeta, meta);
    toc.push_back(makeTocEntry(kTocNameBlobMeta, tocFlags(ci_compressor),
                               digestOf(Digester::Sha256, ci_raw), ci_offset, ci_packed.size(),
                               ci_raw.size()));
    toc.push_back(makeTocEntry(kTocNameBlobMetaHeader, kTocNone,
                               digestOf(Digester::Sha256, header_bytes),
                               ci_offset + ci_packed.size(), header_bytes.size(),
                               header_bytes.size()));

    // Chunk digests, in ci order (INLINED_CHUNK_DIGEST).
    std::vector<uint8_t> digest_table;
    digest_table.reserve(digests_.size() * kDigestSize);
    for (const Digest& d : digests_) digest_table.insert(digest_table.end(), d.begin(), d.end());
    const uint64_t digest_offset = file_->offset();
    writeSection(kTocNameBlobDigest, digest_table);
    toc.push_back(makeTocEntry(kTocNameBlobDigest, kTocNone,
                               digestOf(Digester::Sha256, digest_table), digest_offset,
                               digest_table.size(), digest_table.size()));

    std::vector<uint8_t> toc_bytes;
    for (const TocEntry& e : toc) {
        auto b = bytesOf(e);
        toc_bytes.insert(toc_bytes.end(), b.begin(), b.end());
    }
    TarHeader toc_header = makeSectionHeader(kTocNameToc, toc_bytes.size());
    Hasher toc_hash(Digester::Sha256);
    toc_hash.update(toc_bytes);
    toc_hash.update(bytesOf(toc_header));
    writeSection(kTocNameToc, toc_bytes);

    BlobInfo info;
    info.index = index_;
    info.id = toHex(file_hash_.finish());
    info.chunks.reserve(chunks_.size());
    for (uint32_t ci = 0; ci < chunks_.size(); ++ci) info.chunks.push_back(refOf(ci));
    BlobTableEntry& e = info.entry;
    std::memcpy(e.blob_id, info.id.data(), kBlobIdLen);
    e.blob_index = index_;
    e.chunk_size = chunk_size_;
    e.chunk_count = chunkCount();
    e.compression_algo = static_cast<uint32_t>(compressor_);
    e.digest_algo = static_cast<uint32_t>(digester_);
    e.features = features;
    e.compressed_size = file_->offset();
    e.uncompressed_size = uncompressed_end_;
    e.blob_toc_size = static_cast<uint32_t>(toc_bytes.size() + sizeof(TarHeader));
    e.ci_compressor = static_cast<uint32_t>(ci_compressor);
    e.ci_offset = ci_offset;
    e.ci_compressed_size = ci_packed.size();
    e.ci_uncompressed_size = ci_raw.size();
    Digest toc_digest = toc_hash.finish();
    std::memcpy(e.blob_toc_digest, toc_digest.data(), toc_digest.size());

    file_->commit();
    info.path = dir_ / info.id;
    std::error_code ec;
    std::filesystem::rename(temp_path_, info.path, ec);
    if (ec) fail("cannot rename {} to {}: {}", temp_path_.string(), info.path.string(), ec.message());
    finished_ = true;
    return info;
}

}  // namespace rafs::build
