// loadBlobDescriptor: an image mkrafs built describes its blobs in the bootstrap alone (no backend
// read, no local copy), a bootstrap whose chunk info table lists only some chunks falls back to
// the blob's ci array and digest section (kept in the cache dir for the next mount), and
// inconsistent table entries are refused.
#include "daemon/core/BlobMetaLoader.h"

#include "daemon/backends/LocalfsBackend.h"
#include "format/BlobFile.h"
#include "format/Bootstrap.h"
#include "format/Error.h"
#include "tests/unit/ImageTestUtil.h"
#include "tests/unit/OneFileImage.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <random>

namespace fs = std::filesystem;
using namespace rafsd;

namespace {

constexpr uint32_t kChunkSize = 16 * 1024;

class NoBackend : public Backend {
public:
    void read(const std::string& blob_id, uint64_t, std::span<uint8_t>) override {
        rafs::fail("test backend: no read expected (blob {})", blob_id);
    }
    uint64_t size(const std::string& blob_id) override { rafs::fail("test backend: no size expected (blob {})", blob_id); }
    std::string describe() const override { return "none"; }
};

// One file of half random, half repeated bytes in 16 KiB chunks: raw and compressed chunks.
struct BuiltImage {
    rafs::test::TempDir dir;
    BuiltImage() {
        std::vector<uint8_t> data(6 * kChunkSize + 1000);
        std::mt19937_64 rnd(11);
        for (size_t i = 0; i < data.size() / 2; ++i) data[i] = static_cast<uint8_t>(rnd());
        rafs::test::buildOneFileImage(dir.path(), "data", data, kChunkSize);
    }
    std::vector<uint8_t> bootstrapBytes() const { return rafs::test::readFile(dir / "img/image.boot"); }
    fs::path blobs() const { return dir.path() / "img/blobs"; }
};

// The position in the chunk info table of blob 0's entry for ci index `ci` (the table is sorted by
// digest, not by ci index).
size_t tableEntry(const rafs::Bootstrap& bootstrap, uint32_t ci) {
    for (size_t k = 0; k < bootstrap.chunkInfos().size(); ++k) {
        if (bootstrap.chunkInfos()[k].index == ci) return k;
    }
    FAIL("no chunk info table entry for ci " << ci);
    return 0;
}

uint64_t tableField(const rafs::Bootstrap& bootstrap, size_t entry, size_t field) {
    return bootstrap.extSuperBlock().s_chunk_table_offset + entry * sizeof(rafs::ChunkInfo) + field;
}

}  // namespace

TEST_CASE("BlobMetaLoader: a blob the chunk info table lists whole needs no backend and no local copy") {
    BuiltImage image;
    rafs::Bootstrap bootstrap(image.bootstrapBytes(), "image.boot");
    REQUIRE(bootstrap.blobs().size() == 1);
    const rafs::BootstrapBlob& blob = bootstrap.blobs()[0];
    rafs::test::TempDir cache;
    NoBackend none;
    const BlobDescriptor d = loadBlobDescriptor(bootstrap, blob, none, cache.path());

    const rafs::BlobFile file((image.blobs() / blob.id).string(), blob.entry);
    REQUIRE(d.chunks.size() == file.chunks().size());
    for (size_t i = 0; i < d.chunks.size(); ++i) {
        const rafs::BlobChunk& a = d.chunks[i];
        const rafs::BlobChunk& b = file.chunks()[i];
        CHECK((a.compressed_offset == b.compressed_offset && a.compressed_size == b.compressed_size &&
               a.uncompressed_offset == b.uncompressed_offset && a.uncompressed_size == b.uncompressed_size &&
               a.compressed == b.compressed));
    }
    const auto inlined = file.inlinedDigests();
    REQUIRE(inlined.has_value());
    CHECK(d.digests == *inlined);
    CHECK(fs::is_empty(cache.path()));
}

TEST_CASE("BlobMetaLoader: table entries that overlap are refused, naming the blob") {
    BuiltImage image;
    std::vector<uint8_t> bytes = image.bootstrapBytes();
    rafs::Bootstrap parsed(bytes, "image.boot");
    // Chunk 1 made to start where chunk 0 does.
    rafs::test::put(bytes, tableField(parsed, tableEntry(parsed, 1), offsetof(rafs::ChunkInfo, uncompressed_offset)),
                    parsed.chunkInfos()[tableEntry(parsed, 0)].uncompressed_offset);
    rafs::Bootstrap bootstrap(bytes, "image.boot");
    rafs::test::TempDir cache;
    NoBackend none;
    try {
        loadBlobDescriptor(bootstrap, bootstrap.blobs()[0], none, cache.path());
        FAIL("loaded");
    } catch (const rafs::Error& e) {
        const std::string what = e.what();
        CHECK_THAT(what, Catch::Contains(bootstrap.blobs()[0].id) && Catch::Contains("chunk info table") &&
                             Catch::Contains("overlaps"));
    }
}

TEST_CASE("BlobMetaLoader: a Nydus image's blob loads as its own ci array and digest section describe it") {
    RAFS_REQUIRE_FIXTURES();
    rafs::Bootstrap bootstrap(rafs::test::kBoot22);
    const rafs::BootstrapBlob& blob = bootstrap.blobs()[0];
    REQUIRE(blob.id == rafs::test::kBlob22Id);
    size_t listed = 0;
    for (const rafs::ChunkInfo& c : bootstrap.chunkInfos()) listed += c.blob_index == blob.index;
    const rafs::BlobFile file(rafs::test::kBlob22, blob.entry);
    rafs::test::TempDir cache;
    LocalfsBackend backend(rafs::test::kFixtureDir);
    const BlobDescriptor d = loadBlobDescriptor(bootstrap, blob, backend, cache.path());
    CHECK(d.chunks == file.chunks());
    const auto inlined = file.inlinedDigests();
    REQUIRE(inlined.has_value());
    CHECK(d.digests == *inlined);
    // Nydus's builder lists the chunks files use; where that is all of them nothing is fetched or kept.
    CHECK(fs::exists(cache.path() / (blob.id + ".blob.meta")) == (listed < blob.chunk_count));
}

TEST_CASE("BlobMetaLoader: a table short of a chunk loads the blob's ci array and digests, then its local copy") {
    BuiltImage image;
    std::vector<uint8_t> bytes = image.bootstrapBytes();
    rafs::Bootstrap parsed(bytes, "image.boot");
    // Chunk 1's entry made a second entry for chunk 0: the table no longer lists chunk 1.
    rafs::test::put(bytes, tableField(parsed, tableEntry(parsed, 1), offsetof(rafs::ChunkInfo, index)), uint32_t{0});
    rafs::Bootstrap bootstrap(bytes, "image.boot");
    const rafs::BootstrapBlob& blob = bootstrap.blobs()[0];
    const rafs::BlobFile file((image.blobs() / blob.id).string(), blob.entry);
    rafs::test::TempDir cache;
    LocalfsBackend backend(image.blobs());
    const BlobDescriptor fetched = loadBlobDescriptor(bootstrap, blob, backend, cache.path());
    CHECK(fetched.chunks == file.chunks());
    const auto inlined = file.inlinedDigests();
    REQUIRE(inlined.has_value());
    CHECK(fetched.digests == *inlined);
    CHECK(fs::exists(cache.path() / (blob.id + ".blob.meta")));
    // The local copy serves the next mount without the backend.
    NoBackend none;
    const BlobDescriptor again = loadBlobDescriptor(bootstrap, blob, none, cache.path());
    CHECK(again.chunks == fetched.chunks);
    CHECK(again.digests == fetched.digests);
    CHECK(again.fingerprint() == fetched.fingerprint());

    // Another image naming the same blob id with another blob table entry (here another ToC
    // digest) does not take the copy this one's entry vouched for: it must ask the blob itself.
    std::vector<uint8_t> other_bytes = bytes;
    const uint64_t toc_digest_at = bootstrap.extSuperBlock().s_blob_table_offset +
                                   offsetof(rafs::BlobTableEntry, blob_toc_digest);
    other_bytes[toc_digest_at] ^= 0x01;
    rafs::Bootstrap other(other_bytes, "other.boot");
    CHECK_THROWS_WITH(loadBlobDescriptor(other, other.blobs()[0], none, cache.path()), Catch::Contains("no read expected"));
}
