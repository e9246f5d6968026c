#include "TempDir.h"

#include "builder/writer/PrefetchLayout.h"
#include "format/ByteView.h"
#include "format/InputFile.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>

using namespace rafs;
using namespace rafs::build;
using Catch::Matchers::Contains;

namespace {

constexpr uint32_t kChunk = 4096;

std::vector<uint8_t> chunkData(uint8_t fill, size_t size) { return std::vector<uint8_t>(size, fill); }

Digest digestFor(uint8_t fill) {
    Digest d{};
    d[0] = fill;
    return d;
}

std::shared_ptr<Inode> regularFile(BlobWriter& blob, ChunkDictionary& dictionary,
                                   std::initializer_list<std::pair<uint8_t, size_t>> chunks) {
    auto inode = std::make_shared<Inode>();
    inode->mode = S_IFREG | 0644;
    for (auto [fill, size] : chunks) {
        if (auto known = dictionary.find(digestFor(fill), static_cast<uint32_t>(size))) {
            inode->chunks.push_back(*known);
            continue;
        }
        const std::vector<uint8_t> data = chunkData(fill, size);
        inode->chunks.push_back(blob.append(data, false, static_cast<uint32_t>(size), digestFor(fill)));
        dictionary.insert(inode->chunks.back());
    }
    return inode;
}

std::shared_ptr<Inode> directory() {
    auto inode = std::make_shared<Inode>();
    inode->mode = S_IFDIR | 0755;
    return inode;
}

}  // namespace

TEST_CASE("placePrefetchFirst puts the listed files' chunks first, in list order", "[builder]") {
    test::TempDir dir;
    BlobWriter blob(dir.path(), 0, kChunk, Compressor::None, Digester::Blake3);
    ChunkDictionary dictionary;
    FileTree tree;
    // Source order: /a (chunks 1, 2), /d/x (3), /d/y (4, and 1 again: deduplicated), /z (5).
    tree.put("/a", regularFile(blob, dictionary, {{1, kChunk}, {2, 100}}), 0);
    tree.put("/d", directory(), 0);
    tree.put("/d/x", regularFile(blob, dictionary, {{3, kChunk}}), 0);
    tree.put("/d/y", regularFile(blob, dictionary, {{4, 10}, {1, kChunk}}), 0);
    tree.put("/z", regularFile(blob, dictionary, {{5, kChunk}}), 0);
    REQUIRE(blob.chunkCount() == 5);

    // /z, then the directory /d (its files in name order), then /a; /missing is skipped.
    placePrefetchFirst({"/z", "/missing", "/d", "/a"}, tree, dictionary, blob);

    auto fills = [&](const std::string& path) {
        std::vector<std::pair<uint8_t, uint32_t>> out;  // (fill, ci)
        for (const ChunkRef& c : tree.find(path)->inode->chunks) out.emplace_back(c.digest[0], c.ci_index);
        return out;
    };
    CHECK(fills("/z") == std::vector<std::pair<uint8_t, uint32_t>>{{5, 0}});
    CHECK(fills("/d/x") == std::vector<std::pair<uint8_t, uint32_t>>{{3, 1}});
    CHECK(fills("/d/y") == std::vector<std::pair<uint8_t, uint32_t>>{{4, 2}, {1, 3}});
    CHECK(fills("/a") == std::vector<std::pair<uint8_t, uint32_t>>{{1, 3}, {2, 4}});
    // The dictionary hands later layers the new places.
    REQUIRE(dictionary.find(digestFor(2), 100));
    CHECK(dictionary.find(digestFor(2), 100)->ci_index == 4);

    // Offsets ascend with ci, and each chunk's bytes are where its reference says.
    const BlobInfo info = blob.finish();
    const InputFile file(info.path.string());
    uint64_t compressed = 0;
    uint64_t uncompressed = 0;
    std::vector<const ChunkRef*> by_ci(5, nullptr);
    tree.walk([&](Node& n, const std::string&) {
        if (n.inode && n.inode->isReg()) {
            for (const ChunkRef& c : n.inode->chunks) by_ci.at(c.ci_index) = &c;
        }
    });
    for (const ChunkRef* c : by_ci) {
        REQUIRE(c != nullptr);
        CHECK(c->compressed_offset == compressed);
        CHECK(c->uncompressed_offset == uncompressed);
        CHECK(file.read(c->compressed_offset, c->compressed_size) == chunkData(c->digest[0], c->compressed_size));
        compressed += c->compressed_size;
        uncompressed = alignUp(uncompressed + c->uncompressed_size, uint64_t{kChunk});
    }
}

TEST_CASE("placePrefetchFirst leaves a blob alone when no listed file has chunks in it", "[builder]") {
    test::TempDir dir;
    BlobWriter blob(dir.path(), 1, kChunk, Compressor::None, Digester::Blake3);
    ChunkDictionary dictionary;
    FileTree tree;
    tree.put("/a", regularFile(blob, dictionary, {{1, kChunk}}), 1);
    tree.put("/b", directory(), 1);
    placePrefetchFirst({"/b", "/nothing"}, tree, dictionary, blob);
    CHECK(tree.find("/a")->inode->chunks[0].compressed_offset == 0);
    CHECK(std::filesystem::exists(dir.path() / ".blob-1.tmp"));
}

TEST_CASE("BlobWriter::placeFirst refuses a chunk it does not have", "[builder]") {
    test::TempDir dir;
    BlobWriter blob(dir.path(), 0, kChunk, Compressor::None, Digester::Blake3);
    const std::vector<uint8_t> data = chunkData(7, 10);
    blob.append(data, false, 10, digestFor(7));
    const std::vector<uint32_t> first{1};
    CHECK_THROWS_WITH(blob.placeFirst(first), Contains("no chunk 1"));
}
