#include "ImageTestUtil.h"

#include "format/BlobSections.h"
#include "format/Digest.h"
#include "format/InputFile.h"

#include <catch2/catch.hpp>

#include <cstring>

using namespace rafs;
using namespace rafs::test;
using Catch::Matchers::Contains;

namespace {

std::vector<Section> peelBytes(const std::vector<uint8_t>& data) {
    return peelSections(
        [&](uint64_t offset, std::span<uint8_t> out) {
            REQUIRE(offset + out.size() <= data.size());
            std::memcpy(out.data(), data.data() + offset, out.size());
        },
        data.size());
}

std::vector<TocEntry> tocOf(const std::vector<uint8_t>& blob) {
    const Section toc = peelBytes(blob).back();
    REQUIRE(toc.name == kTocNameToc);
    return parseToc(std::span(blob).subspan(toc.offset, toc.size));
}

}  // namespace

TEST_CASE("section tar headers are byte-identical to Nydus's", "[format]") {
    RAFS_REQUIRE_FIXTURES();
    for (const std::string& path : {kBlob22, kInlineBlob}) {
        const std::vector<uint8_t> blob = readFile(path);
        const std::vector<Section> sections = peelBytes(blob);
        REQUIRE(sections.size() == 4);
        for (const Section& s : sections) {
            const TarHeader made = makeSectionHeader(s.name, s.size);
            INFO(path << " section " << s.name);
            CHECK(std::memcmp(&made, blob.data() + s.offset + s.size, sizeof(made)) == 0);
        }
    }
}

TEST_CASE("sections peel off both fixture blobs", "[format]") {
    RAFS_REQUIRE_FIXTURES();
    const std::vector<Section> native = peelBytes(readFile(kBlob22));
    REQUIRE(native.size() == 4);
    CHECK((native[0].name == "image.blob" && native[0].offset == 0 && native[0].size == 7802));
    CHECK((native[1].name == "blob.meta" && native[1].offset == 8314 && native[1].size == 32 + 4096));
    CHECK((native[2].name == "blob.digest" && native[2].offset == 12954 && native[2].size == 64));
    CHECK((native[3].name == "rafs.blob.toc" && native[3].offset == 13530 && native[3].size == 512));

    const std::vector<Section> inline_meta = peelBytes(readFile(kInlineBlob));
    REQUIRE(inline_meta.size() == 4);
    CHECK((inline_meta[0].name == "image.blob" && inline_meta[0].size == 2829));
    CHECK((inline_meta[1].name == "blob.meta" && inline_meta[1].offset == 3341 && inline_meta[1].size == 4144));
    CHECK((inline_meta[2].name == "image.boot" && inline_meta[2].offset == 7997 && inline_meta[2].size == 501));
    CHECK((inline_meta[3].name == "rafs.blob.toc" && inline_meta[3].size == 512));

    // A bootstrap ends in zeros, not in a tar header.
    CHECK(peelBytes(readFile(kBoot22)).empty());
}

TEST_CASE("section headers round-trip, octal and base-256 sizes", "[format]") {
    for (uint64_t size : {0ULL, 1ULL, 4128ULL, 077777777777ULL, 077777777777ULL + 1, 1ULL << 40}) {
        const TarHeader h = makeSectionHeader("image.blob", size);
        // Content is only addressed, never read, so a huge section needs no memory: the reader
        // serves the header at the end and zeros elsewhere.
        const uint64_t file_size = size + sizeof(h);
        std::vector<Section> sections = peelSections(
            [&](uint64_t offset, std::span<uint8_t> out) {
                if (offset == size) {
                    std::memcpy(out.data(), &h, sizeof(h));
                } else {
                    std::memset(out.data(), 0, out.size());
                }
            },
            file_size);
        REQUIRE(sections.size() == 1);
        CHECK(sections[0].name == "image.blob");
        CHECK(sections[0].offset == 0);
        CHECK(sections[0].size == size);
    }
    CHECK_THROWS_WITH(makeSectionHeader("", 1), Contains("1..100"));
    CHECK_THROWS_WITH(makeSectionHeader(std::string(101, 'x'), 1), Contains("1..100"));
}

TEST_CASE("malformed tar sections are errors", "[format]") {
    std::vector<uint8_t> blob(100, 0x55);
    const TarHeader h = makeSectionHeader("blob.digest", 100);
    const auto* p = reinterpret_cast<const uint8_t*>(&h);
    blob.insert(blob.end(), p, p + sizeof(h));
    REQUIRE(peelBytes(blob).size() == 1);

    std::vector<uint8_t> bad = blob;
    bad[100] ^= 1;  // the name: checksum no longer matches
    CHECK_THROWS_WITH(peelBytes(bad), Contains("bad checksum"));

    const TarHeader too_big = makeSectionHeader("blob.digest", 101);
    std::memcpy(bad.data() + 100, &too_big, sizeof(too_big));
    CHECK_THROWS_WITH(peelBytes(bad), Contains("starts before the blob"));

    TarHeader dir = makeSectionHeader("blob.digest", 100);
    dir.typeflag = '5';
    std::memset(dir.chksum, ' ', sizeof(dir.chksum));
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof(dir); ++i) sum += reinterpret_cast<const uint8_t*>(&dir)[i];
    std::snprintf(dir.chksum, sizeof(dir.chksum), "%07o", sum);
    std::memcpy(bad.data() + 100, &dir, sizeof(dir));
    CHECK_THROWS_WITH(peelBytes(bad), Contains("not a regular file"));

    TarHeader no_size = makeSectionHeader("blob.digest", 100);
    std::memset(no_size.size, 'x', sizeof(no_size.size));
    std::memset(no_size.chksum, ' ', sizeof(no_size.chksum));
    sum = 0;
    for (size_t i = 0; i < sizeof(no_size); ++i) sum += reinterpret_cast<const uint8_t*>(&no_size)[i];
    std::snprintf(no_size.chksum, sizeof(no_size.chksum), "%07o", sum);
    std::memcpy(bad.data() + 100, &no_size, sizeof(no_size));
    CHECK_THROWS_WITH(peelBytes(bad), Contains("malformed size"));
}

TEST_CASE("ToCs of both fixtures parse", "[format]") {
    RAFS_REQUIRE_FIXTURES();
    const std::vector<uint8_t> native_blob = readFile(kBlob22);
    const std::vector<TocEntry> native = tocOf(native_blob);
    REQUIRE(native.size() == 4);
    CHECK(tocEntryName(native[0]) == "image.blob");
    CHECK(native[0].flags == kTocNone);
    CHECK(native[0].compressed_size == 7802);
    CHECK(native[0].uncompressed_size == 36864);
    CHECK(toHex(native[0].uncompressed_digest).substr(0, 16) == "632d11c76e652544");
    CHECK(tocEntryName(native[1]) == "blob.meta");
    CHECK((native[1].compressed_offset == 8314 && native[1].compressed_size == 32 && native[1].uncompressed_size == 32));
    CHECK(tocEntryName(native[2]) == "blob.meta.header");
    CHECK((native[2].compressed_offset == 8346 && native[2].compressed_size == 4096));
    CHECK(tocEntryName(native[3]) == "blob.digest");
    CHECK((native[3].compressed_offset == 12954 && native[3].compressed_size == 64));

    const std::vector<TocEntry> inline_toc = tocOf(readFile(kInlineBlob));
    REQUIRE(inline_toc.size() == 4);
    CHECK(tocEntryName(inline_toc[3]) == "image.boot");
    CHECK(inline_toc[3].flags == kTocZstd);
    CHECK((inline_toc[3].compressed_offset == 7997 && inline_toc[3].compressed_size == 501 &&
           inline_toc[3].uncompressed_size == 20480));
    CHECK(toHex(inline_toc[3].uncompressed_digest).substr(0, 16) == "d85f1b77aab4849b");

    // makeTocEntry writes what Nydus wrote, up to the reserved bytes (2.2-era garbage there).
    Digest digest;
    std::memcpy(digest.data(), native[1].uncompressed_digest, digest.size());
    const TocEntry made = makeTocEntry("blob.meta", kTocNone, digest, 8314, 32, 32);
    CHECK(std::memcmp(&made, &native[1], offsetof(TocEntry, reserved2)) == 0);
}

TEST_CASE("malformed ToCs are errors", "[format]") {
    const TocEntry good = makeTocEntry("blob.digest", kTocNone, Digest{}, 1, 2, 2);
    std::vector<uint8_t> raw(sizeof(good));
    std::memcpy(raw.data(), &good, sizeof(good));
    CHECK(parseToc(raw).size() == 1);
    CHECK_THROWS_WITH(parseToc({}), Contains("multiple of 128"));
    CHECK_THROWS_WITH(parseToc(std::span(raw).first(100)), Contains("multiple of 128"));
    CHECK_THROWS_WITH(parseToc(std::vector<uint8_t>(0x10000, 0)), Contains("multiple of 128"));
    std::vector<uint8_t> bad = raw;
    bad[0] = 3;  // none and zstd at once
    CHECK_THROWS_WITH(parseToc(bad), Contains("invalid flags"));
    bad = raw;
    bad[offsetof(TocEntry, name)] = 0;
    CHECK_THROWS_WITH(parseToc(bad), Contains("no name"));
    CHECK_THROWS_WITH(makeTocEntry("a-name-of-17-chrs", kTocNone, Digest{}, 0, 0, 0), Contains("1..16"));
    CHECK_THROWS_WITH(makeTocEntry("x", 8, Digest{}, 0, 0, 0), Contains("invalid flags"));
    CHECK(tocEntryName(makeTocEntry("sixteen-bytes-xx", kTocZstd, Digest{}, 0, 0, 0)) == "sixteen-bytes-xx");
}
