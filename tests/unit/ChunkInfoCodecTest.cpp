#include "format/ChunkInfoCodec.h"
#include "format/Error.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <random>

using namespace rafs;
using Catch::Matchers::Contains;

namespace {

BlobChunk chunk(uint64_t coff, uint32_t csize, uint64_t uoff, uint32_t usize, bool compressed) {
    BlobChunk c;
    c.compressed_offset = coff;
    c.compressed_size = csize;
    c.uncompressed_offset = uoff;
    c.uncompressed_size = usize;
    c.compressed = compressed;
    return c;
}

BlobTableEntry entryFor(const BlobMetaHeader& h) {
    BlobTableEntry e{};
    std::memset(e.blob_id, 'a', sizeof(e.blob_id));
    e.features = h.s_features;
    e.ci_compressor = h.s_ci_compressor;
    e.chunk_count = h.s_ci_entries;
    e.ci_offset = h.s_ci_offset;
    e.ci_compressed_size = h.s_ci_compressed_size;
    e.ci_uncompressed_size = h.s_ci_uncompressed_size;
    return e;
}

}  // namespace

TEST_CASE("ci V1 bit packing matches nydus storage/src/meta/chunk_info_v1.rs", "[format]") {
    // usize-1 = 0xA12344: bits 0..19 go to 44..63, bits 20..23 to 8..11.
    // csize-1 = 0xF00000: bits 0..19 (zero) go to 44..63, bits 20..23 to 40..43.
    BlobChunk c = chunk(0xff'ffff'ffffULL, 0xF00001, 0xabc'def0'1000ULL, 0xA12345, true);
    BlobChunkInfoV1 raw = encodeChunkInfoV1(c);
    CHECK(raw.uncomp_info == 0x1234'4abc'def0'1a00ULL);
    CHECK(raw.comp_info == 0x0000'0fff'ffff'ffffULL);
    CHECK(decodeChunkInfoV1(raw) == c);

    // Both 16 MiB maxima and the largest offsets.
    BlobChunk max = chunk(0xff'ffff'ffffULL, 0x1000000, 0xfff'ffff'f000ULL, 0xFFFFFF, true);
    raw = encodeChunkInfoV1(max);
    CHECK(raw.uncomp_info == 0xffff'efff'ffff'ff00ULL);
    CHECK(raw.comp_info == 0xffff'ffff'ffff'ffffULL);
    CHECK(decodeChunkInfoV1(raw) == max);

    // Smallest: one-byte chunks at offset 0 are raw (equal sizes) and encode as all zeros.
    BlobChunk min = chunk(0, 1, 0, 1, false);
    raw = encodeChunkInfoV1(min);
    CHECK(raw.uncomp_info == 0);
    CHECK(raw.comp_info == 0);
    CHECK(decodeChunkInfoV1(raw) == min);

    // The first entry of the 2.2 fixture blob be7d77...: 16931 bytes stored in 4828.
    BlobChunk fixture = decodeChunkInfoV1(BlobChunkInfoV1{0x0422'2000'0000'0000ULL, 0x012d'b000'0000'0000ULL});
    CHECK(fixture == chunk(0, 4828, 0, 16931, true));
    BlobChunk second = decodeChunkInfoV1(BlobChunkInfoV1{0x0345'7000'0000'5000ULL, 0x00b9'd000'0000'12dcULL});
    CHECK(second == chunk(4828, 2974, 20480, 13400, true));
}

TEST_CASE("ci V1 rejects what it cannot store", "[format]") {
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0, 1, 0, 0, false)), Contains("uncompressed size 0"));
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0, 10, 0, 0x1000001, true)), Contains("uncompressed size"));
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0, 0x1000001, 0, 10, true)), Contains("compressed size"));
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0, 0, 0, 10, true)), Contains("compressed size 0"));
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0, 5, 0x1001, 10, true)), Contains("4 KiB aligned"));
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0, 5, 0x1000'0000'0000ULL, 10, true)), Contains("4 KiB aligned"));
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0x100'0000'0000ULL, 5, 0, 10, true)), Contains("40 bits"));
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0, 5, 0, 10, false)), Contains("raw chunk"));
    CHECK_THROWS_WITH(encodeChunkInfoV1(chunk(0, 10, 0, 10, true)), Contains("equal sizes"));
    BlobChunk crc = chunk(0, 5, 0, 10, true);
    crc.has_crc32 = true;
    CHECK_THROWS_WITH(encodeChunkInfoV1(crc), Contains("crc32"));
}

TEST_CASE("ci V2 bit packing matches nydus storage/src/meta/chunk_info_v2.rs", "[format]") {
    BlobChunk c = chunk(0x12'3456'789aULL, 0xFFFFFF, 0xfff'ffff'f000ULL, 0x1000000, true);
    c.has_crc32 = true;
    c.crc32 = 0xdeadbeef;
    BlobChunkInfoV2 raw = encodeChunkInfoV2(c);
    CHECK(raw.uncomp_info == 0x11ff'ffff'ffff'ffffULL);  // flags 0x11, usize-1, uoff >> 12
    CHECK(raw.comp_info == 0xffff'ff12'3456'789aULL);    // csize itself, not minus one
    CHECK(raw.data == 0xdeadbeef);
    CHECK(decodeChunkInfoV2(raw) == c);

    // V2 keeps the compressed flag explicitly, so equal sizes may still be compressed.
    BlobChunk equal = chunk(4096, 100, 8192, 100, true);
    raw = encodeChunkInfoV2(equal);
    CHECK(raw.uncomp_info == (0x01ULL << 56 | 99ULL << 32 | 2));
    CHECK(raw.comp_info == (100ULL << 40 | 4096));
    CHECK(raw.data == 0);
    CHECK(decodeChunkInfoV2(raw) == equal);

    BlobChunk raw_chunk = chunk(7, 4096, 0, 4096, false);
    CHECK(encodeChunkInfoV2(raw_chunk).uncomp_info >> 56 == 0);
    CHECK(decodeChunkInfoV2(encodeChunkInfoV2(raw_chunk)) == raw_chunk);

    CHECK_THROWS_WITH(encodeChunkInfoV2(chunk(0, 0x1000000, 0, 0x1000000, false)), Contains("compressed size"));
    for (uint64_t flag : {0x02ULL, 0x04ULL, 0x08ULL, 0x20ULL, 0x80ULL}) {
        BlobChunkInfoV2 bad{flag << 56, 10ULL << 40, 0};
        CHECK_THROWS_WITH(decodeChunkInfoV2(bad), Contains("unsupported flags"));
    }
}

TEST_CASE("ci entries round-trip through both versions", "[format]") {
    std::mt19937_64 rng(42);
    for (int i = 0; i < 2000; ++i) {
        BlobChunk c;
        c.uncompressed_size = static_cast<uint32_t>(rng() % 0x1000000 + 1);
        c.uncompressed_offset = (rng() & 0xffff'ffffULL) << 12;
        c.compressed_offset = rng() & 0xff'ffff'ffffULL;
        c.compressed = rng() % 2 == 0;
        c.compressed_size = c.compressed ? static_cast<uint32_t>(rng() % 0xFFFFFF + 1) : c.uncompressed_size;
        if (c.compressed && c.compressed_size == c.uncompressed_size) ++c.compressed_size;
        if (c.compressed_size <= 0xFFFFFF) {
            BlobChunk v2 = c;
            v2.has_crc32 = rng() % 2 == 0;
            v2.crc32 = v2.has_crc32 ? static_cast<uint32_t>(rng()) : 0;
            REQUIRE(decodeChunkInfoV2(encodeChunkInfoV2(v2)) == v2);
        }
        REQUIRE(decodeChunkInfoV1(encodeChunkInfoV1(c)) == c);
    }
}

TEST_CASE("ci arrays encode, decode and validate", "[format]") {
    std::vector<BlobChunk> chunks = {chunk(0, 4828, 0, 16931, true), chunk(4828, 2974, 20480, 13400, true),
                                     chunk(7802, 4096, 36864, 4096, false)};
    for (bool v2 : {false, true}) {
        std::vector<uint8_t> raw = encodeChunkInfoArray(chunks, v2);
        REQUIRE(raw.size() == chunks.size() * (v2 ? 24 : 16));
        CHECK(decodeChunkInfoArray(raw, 3, v2) == chunks);
        CHECK(decodeChunkInfoArray(raw, 2, v2).size() == 2);
        CHECK_THROWS_WITH(decodeChunkInfoArray(std::span(raw).first(raw.size() - 1), 3, v2), Contains("too short"));
        CHECK_THROWS_WITH(decodeChunkInfoArray(raw, kMaxChunksPerBlob + 1, v2), Contains("exceed"));
    }
    // The second chunk starts inside the first one's uncompressed range.
    std::vector<BlobChunk> overlapping = {chunk(0, 10, 0, 8192, true), chunk(10, 10, 4096, 100, true)};
    std::vector<uint8_t> raw = encodeChunkInfoArray(overlapping, false);
    CHECK_THROWS_WITH(decodeChunkInfoArray(raw, 2, false), Contains("overlaps"));
    // Decreasing offsets are overlaps too.
    std::vector<BlobChunk> backwards = {chunk(0, 10, 8192, 100, true), chunk(10, 10, 0, 100, true)};
    raw = encodeChunkInfoArray(backwards, true);
    CHECK_THROWS_WITH(decodeChunkInfoArray(raw, 2, true), Contains("overlaps"));
    // A V2 entry with compressed size 0 (only batch chunks may have one).
    BlobChunkInfoV2 zero{0, 0, 0};
    std::vector<uint8_t> zero_raw(sizeof(zero));
    std::memcpy(zero_raw.data(), &zero, sizeof(zero));
    CHECK_THROWS_WITH(decodeChunkInfoArray(zero_raw, 1, true), Contains("compressed size 0"));
}

TEST_CASE("ci header is made and checked against the blob table", "[format]") {
    BlobMetaHeader h = makeBlobMetaHeader(0x70000021, Compressor::Zstd, 2, 8314, 20, 32);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&h);
    const uint8_t magic[4] = {0x0b, 0xb1, 0x0b, 0xb1};
    CHECK(std::memcmp(bytes, magic, 4) == 0);
    CHECK(std::memcmp(bytes + 4092, magic, 4) == 0);
    CHECK(h.s_ci_compressor == 3);
    for (size_t i = 60; i < 4092; ++i) REQUIRE(bytes[i] == 0);

    const BlobTableEntry good = entryFor(h);
    CHECK_NOTHROW(checkBlobMetaHeader(h, good));

    BlobMetaHeader bad_magic = h;
    bad_magic.s_magic2 = 0;
    CHECK_THROWS_WITH(checkBlobMetaHeader(bad_magic, good), Contains("magic") && Contains(std::string(64, 'a')));
    auto mismatch = [&](auto mutate, const char* field) {
        BlobTableEntry e = good;
        mutate(e);
        CHECK_THROWS_WITH(checkBlobMetaHeader(h, e), Contains(field));
    };
    mismatch([](BlobTableEntry& e) { e.features ^= 0x20; }, "features");
    mismatch([](BlobTableEntry& e) { e.ci_compressor = 0; }, "ci_compressor");
    mismatch([](BlobTableEntry& e) { e.chunk_count = 3; }, "ci_entries");
    mismatch([](BlobTableEntry& e) { e.ci_offset = 0; }, "ci_offset");
    mismatch([](BlobTableEntry& e) { e.ci_compressed_size = 32; }, "ci_compressed_size");
    mismatch([](BlobTableEntry& e) { e.ci_uncompressed_size = 48; }, "ci_uncompressed_size");
}
