#include "daemon/core/BlobMetaLoader.h"

#include "format/BlobSections.h"
#include "format/Codec.h"
#include "format/Error.h"
#include "daemon/core/Concurrently.h"
#include "daemon/core/DurableFile.h"
#include "daemon/core/Log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

// The local copy: a header, the uncompressed ci array, one digest per chunk, then the sha256 of
// all that. Anything that does not match exactly is ignored and fetched again. The header names
// the blob table entry the copy was fetched under: a blob id is only a name, and another image
// naming the same blob (its ci range, its ToC digest) otherwise must not take this image's word
// for its chunks and digests.
constexpr char kMagic[8] = {'R', 'A', 'F', 'S', 'D', 'M', 'E', '2'};
struct MetaCacheHeader {
    char magic[8];
    char blob_id[64];
    uint32_t chunk_count;
    uint32_t v2;
    uint64_t ci_size;
    uint8_t entry_digest[rafs::kDigestSize];
};
static_assert(sizeof(MetaCacheHeader) == 120);

bool isV2(const rafs::BootstrapBlob& blob) { return (blob.features & rafs::kBlobChunkInfoV2) != 0; }

// The sha256 of the blob's table entry but its place in this image's table.
rafs::Digest entryDigest(const rafs::BootstrapBlob& blob) {
    rafs::BlobTableEntry entry = blob.entry;
    entry.blob_index = 0;
    return rafs::digestOf(rafs::Digester::Sha256,
                          std::span(reinterpret_cast<const uint8_t*>(&entry), sizeof entry));
}

std::optional<std::vector<uint8_t>> readLocal(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return bytes;
}

std::optional<std::pair<std::vector<uint8_t>, std::vector<rafs::Digest>>> loadLocal(
    const fs::path& path, const rafs::BootstrapBlob& blob) {
    auto bytes = readLocal(path);
    if (!bytes) return std::nullopt;
    const uint64_t ci_size = blob.ci_uncompressed_size;
    const uint64_t body = sizeof(MetaCacheHeader) + ci_size + uint64_t{blob.chunk_count} * rafs::kDigestSize;
    if (bytes->size() != body + rafs::kDigestSize) return std::nullopt;
    MetaCacheHeader h;
    std::memcpy(&h, bytes->data(), sizeof(h));
    if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0 || std::memcmp(h.blob_id, blob.id.data(), 64) != 0 ||
        h.chunk_count != blob.chunk_count || h.v2 != (isV2(blob) ? 1u : 0u) || h.ci_size != ci_size ||
        std::memcmp(h.entry_digest, entryDigest(blob).data(), rafs::kDigestSize) != 0) {
        return std::nullopt;
    }
    rafs::Digest sum = rafs::digestOf(rafs::Digester::Sha256, std::span(*bytes).first(body));
    if (std::memcmp(sum.data(), bytes->data() + body, sum.size()) != 0) return std::nullopt;
    std::vector<uint8_t> ci(bytes->begin() + sizeof(h), bytes->begin() + static_cast<ptrdiff_t>(sizeof(h) + ci_size));
    return std::make_pair(std::move(ci),
                          rafs::splitDigests(std::span(*bytes).subspan(sizeof(h) + ci_size,
                                                                      uint64_t{blob.chunk_count} * rafs::kDigestSize)));
}

// Written under a temporary name and renamed, so a crash never leaves a torn copy.
void saveLocal(const fs::path& path, const rafs::BootstrapBlob& blob, std::span<const uint8_t> ci,
               const std::vector<rafs::Digest>& digests) {
    MetaCacheHeader h{};
    std::memcpy(h.magic, kMagic, sizeof(kMagic));
    std::memcpy(h.blob_id, blob.id.data(), 64);
    h.chunk_count = blob.chunk_count;
    h.v2 = isV2(blob) ? 1 : 0;
    h.ci_size = ci.size();
    const rafs::Digest entry = entryDigest(blob);
    std::memcpy(h.entry_digest, entry.data(), entry.size());
    std::vector<uint8_t> bytes(sizeof(h));
    std::memcpy(bytes.data(), &h, sizeof(h));
    bytes.insert(bytes.end(), ci.begin(), ci.end());
    for (const auto& d : digests) bytes.insert(bytes.end(), d.begin(), d.end());
    rafs::Digest sum = rafs::digestOf(rafs::Digester::Sha256, bytes);
    bytes.insert(bytes.end(), sum.begin(), sum.end());

    replaceFileSynced(path, bytes);
}

std::vector<uint8_t> fetchCi(const rafs::BootstrapBlob& blob, Backend& backend) {
    std::vector<uint8_t> meta(blob.ci_compressed_size + sizeof(rafs::BlobMetaHeader));
    backend.read(blob.id, blob.ci_offset, meta);
    rafs::BlobMetaHeader header;
    std::memcpy(&header, meta.data() + blob.ci_compressed_size, sizeof(header));
    rafs::checkBlobMetaHeader(header, blob.entry);
    std::vector<uint8_t> ci(blob.ci_uncompressed_size);
    rafs::decompress(blob.ci_compressor, std::span(meta).first(blob.ci_compressed_size), ci);
    return ci;
}

// The blob.digest section, found through the blob's ToC, whose size and digest the bootstrap
// records. It is trusted only through the chain bootstrap -> blob_toc_digest -> ToC entry digest
// -> section, so a backend cannot substitute digests that match substituted data. One read takes
// the ToC and the bytes before it, where builders put the digest section (BlobWriter.cpp), so a
// blob without chunk table entries costs one more request at mount, not one per tail section.
std::vector<rafs::Digest> fetchInlinedDigests(const rafs::BootstrapBlob& blob, Backend& backend) {
    if (blob.toc_size <= sizeof(rafs::TarHeader) || blob.toc_digest == rafs::Digest{}) {
        rafs::fail("its blob.digest section cannot be verified: the bootstrap records no ToC for it");
    }
    const uint64_t size = backend.size(blob.id);
    const uint64_t digest_bytes = uint64_t{blob.chunk_count} * rafs::kDigestSize;
    if (size < blob.toc_size) rafs::fail("it is {} bytes, shorter than its ToC ({} bytes)", size, blob.toc_size);
    const uint64_t tail_size = std::min(size, blob.toc_size + digest_bytes + sizeof(rafs::TarHeader));
    const uint64_t tail_offset = size - tail_size;
    std::vector<uint8_t> tail(tail_size);
    backend.read(blob.id, tail_offset, tail);
    const std::span<const uint8_t> toc_bytes = std::span<const uint8_t>(tail).last(blob.toc_size);
    if (rafs::digestOf(rafs::Digester::Sha256, toc_bytes) != blob.toc_digest) {
        rafs::fail("its ToC does not match the digest recorded in the bootstrap");
    }
    const rafs::TocEntry* entry = nullptr;
    auto entries = rafs::parseToc(toc_bytes.first(blob.toc_size - sizeof(rafs::TarHeader)));
    for (const auto& e : entries) {
        if (rafs::tocEntryName(e) == rafs::kTocNameBlobDigest) entry = &e;
    }
    if (entry == nullptr) {
        rafs::fail("no chunk digests (the bootstrap has no chunk table entries for it and its ToC lists no blob.digest section)");
    }
    if (entry->compressed_size != digest_bytes) {
        rafs::fail("blob.digest holds {} bytes for {} chunks", entry->compressed_size, blob.chunk_count);
    }
    if (digest_bytes > size || entry->compressed_offset > size - digest_bytes) {
        rafs::fail("its blob.digest section lies beyond its end");
    }
    std::vector<uint8_t> elsewhere;
    std::span<const uint8_t> raw;
    if (entry->compressed_offset >= tail_offset) {
        raw = std::span<const uint8_t>(tail).subspan(entry->compressed_offset - tail_offset, digest_bytes);
    } else {
        elsewhere.resize(digest_bytes);
        backend.read(blob.id, entry->compressed_offset, elsewhere);
        raw = elsewhere;
    }
    if (std::memcmp(rafs::digestOf(rafs::Digester::Sha256, raw).data(), entry->uncompressed_digest,
                    rafs::kDigestSize) != 0) {
        rafs::fail("its blob.digest section does not match its ToC");
    }
    return rafs::splitDigests(raw);
}

// The blob as the bootstrap's chunk info table describes it, if the table lists every one of its
// chunks: mkrafs lists them all for the blobs it writes (BootstrapWriter's chunkInfoTable), Nydus's
// builder only those some file uses. Then the bootstrap, which the image's digest vouches for,
// replaces the blob's ci array and digest section: nothing to fetch and nothing to keep at mount.
std::optional<std::pair<std::vector<rafs::BlobChunk>, std::vector<rafs::Digest>>> fromChunkTable(
    const rafs::Bootstrap& bootstrap, const rafs::BootstrapBlob& blob) {
    // Counted before anything is allocated: chunk_count alone may ask for gigabytes.
    const auto& infos = bootstrap.chunkInfos();
    const auto listed = std::count_if(infos.begin(), infos.end(), [&](const rafs::ChunkInfo& ci) {
        return ci.blob_index == blob.index && ci.index < blob.chunk_count;
    });
    if (static_cast<uint64_t>(listed) < blob.chunk_count) return std::nullopt;
    std::vector<rafs::BlobChunk> chunks(blob.chunk_count);
    std::vector<rafs::Digest> digests(blob.chunk_count);
    std::vector<bool> known(blob.chunk_count, false);
    uint32_t count = 0;
    for (const rafs::ChunkInfo& ci : infos) {
        if (ci.blob_index != blob.index || ci.index >= blob.chunk_count || known[ci.index]) continue;
        chunks[ci.index] = {.compressed_offset = ci.compressed_offset,
                            .compressed_size = ci.compressed_size,
                            .uncompressed_offset = ci.uncompressed_offset,
                            .uncompressed_size = ci.uncompressed_size,
                            .compressed = (ci.flags & rafs::kChunkCompressed) != 0};
        std::memcpy(digests[ci.index].data(), ci.block_id, rafs::kDigestSize);
        known[ci.index] = true;
        ++count;
    }
    if (count != blob.chunk_count) return std::nullopt;
    try {
        rafs::checkChunkSequence(chunks);
    } catch (const rafs::Error& e) {
        rafs::fail("blob {}: its chunk info table entries: {}", blob.id, e.what());
    }
    return std::make_pair(std::move(chunks), std::move(digests));
}

}  // namespace

BlobDescriptor loadBlobDescriptor(const rafs::Bootstrap& bootstrap, const rafs::BootstrapBlob& blob,
                                  Backend& backend, const fs::path& cache_dir) {
    BlobDescriptor d;
    d.id = blob.id;
    d.compressor = blob.compressor;
    d.digester = blob.digester;
    d.chunk_size = blob.chunk_size;
    d.uncompressed_size = blob.uncompressed_size;

    const fs::path local = cache_dir / (blob.id + ".blob.meta");
    // An error names the blob and where its ci array came from: the bootstrap is not at fault.
    const auto decode = [&](std::span<const uint8_t> ci, const std::string& from) {
        try {
            return rafs::decodeChunkInfoArray(ci, blob.chunk_count, isV2(blob));
        } catch (const rafs::Error& e) {
            rafs::fail("blob {}: the ci array {}: {}", blob.id, from, e.what());
        }
    };
    if (auto table = fromChunkTable(bootstrap, blob)) {
        d.chunks = std::move(table->first);
        d.digests = std::move(table->second);
    } else if (auto cached = loadLocal(local, blob)) {
        d.chunks = decode(cached->first, "kept in " + local.string());
        d.digests = std::move(cached->second);
    } else {
        std::vector<uint8_t> ci;
        try {
            // Two independent reads: the ci array, and the digests the bootstrap lacks.
            runConcurrently(2, 2, [&](size_t i) {
                if (i == 0) ci = fetchCi(blob, backend);
                else d.digests = fetchInlinedDigests(blob, backend);
            });
        } catch (const rafs::Error& e) {
            rafs::fail("blob {}: cannot load its chunk table: {}", blob.id, e.what());
        }
        d.chunks = decode(ci, "in the blob (" + backend.describe() + ")");
        saveLocal(local, blob, ci, d.digests);
    }
    for (size_t i = 0; i < d.chunks.size(); ++i) {
        const rafs::BlobChunk& c = d.chunks[i];
        if (c.uncompressed_offset + c.uncompressed_size > blob.uncompressed_size) {
            rafs::fail("blob {}: chunk {} ends past the blob's uncompressed size", blob.id, i);
        }
    }
    return d;
}

}  // namespace rafsd
