#include "ImageTestUtil.h"
#include "TempDir.h"

#include "builder/commands/Build.h"
#include "format/BlobFile.h"
#include "format/BootstrapCheck.h"
#include "format/ByteView.h"

#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>

using namespace rafs;
using namespace rafs::test;
using Catch::Matchers::Contains;

namespace {

constexpr uint32_t kChunk = 64 * 1024;
constexpr uint64_t kBigSize = 3 * kChunk + 5000;  // four chunks, the last one short

// An image built by mkrafs's own builder: /big (four chunks), /dir/small, /dir/link -> small,
// /fifo, and a prefetch table naming /big.
struct BuiltImage {
    TempDir dir;
    std::vector<uint8_t> bytes;

    explicit BuiltImage(bool chunk_table = true) {
        std::filesystem::create_directories(dir / "src/dir");
        std::mt19937_64 rnd(3);
        std::vector<uint8_t> big(kBigSize);
        for (auto& b : big) b = static_cast<uint8_t>(rnd());
        writeFile(dir / "src/big", big);
        writeFile(dir / "src/dir/small", std::vector<uint8_t>(100, 'x'));
        std::filesystem::create_symlink("small", dir / "src/dir/link");
        REQUIRE(::mkfifo((dir / "src/fifo").c_str(), 0644) == 0);
        std::ofstream(dir / "prefetch") << "/big\n";
        build::BuildOptions options;
        options.output = dir / "img";
        options.sources = {dir / "src"};
        options.chunk_size = kChunk;
        options.threads = 1;
        options.prefetch_list = dir / "prefetch";
        options.chunk_table = chunk_table;
        std::ostringstream log;
        build::build(options, log);
        bytes = readFile(dir / "img/image.boot");
    }

    Bootstrap load() const { return Bootstrap(bytes, "t.boot"); }
    // The ci arrays of the image's blobs, as rafsd and inspect read them.
    std::vector<BlobChunk> blobChunks() const {
        const Bootstrap b = load();
        REQUIRE(b.blobs().size() == 1);
        return BlobFile(dir / ("img/blobs/" + b.blobs()[0].id), b.blobs()[0].entry).chunks();
    }
    uint64_t nid(const std::string& path) const { return load().lookup(path).value(); }
    uint64_t inodeOffset(const std::string& path) const {
        return uint64_t{load().superBlock().meta_blkaddr} * 4096 + nid(path) * 32;
    }
    uint64_t chunkArray(const std::string& path) const {
        const Bootstrap b = load();
        return alignUp(b.inode(nid(path)).inline_offset, sizeof(ChunkAddr));
    }
};

// The error of loading and checking `image`, or "" if it passes.
std::string errorOf(std::vector<uint8_t> image) {
    try {
        checkBootstrap(Bootstrap(std::move(image), "t.boot"));
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

template <typename T>
std::vector<uint8_t> with(std::vector<uint8_t> image, uint64_t offset, T value) {
    put(image, offset, value);
    return image;
}

}  // namespace

TEST_CASE("built images and real Nydus bootstraps pass the check", "[check]") {
    BuiltImage img;
    const BootstrapSummary s = checkBootstrap(img.load());
    CHECK(s.inodes == 6);  // /, /big, /dir, /dir/link, /dir/small, /fifo
    CHECK(s.chunk_indexes.size() == 5);
    std::vector<std::string> paths;
    checkBootstrap(img.load(), [&](const std::string& path, const Inode&) { paths.push_back(path); });
    CHECK(paths == std::vector<std::string>{"/", "/big", "/dir", "/dir/link", "/dir/small", "/fifo"});

    RAFS_REQUIRE_FIXTURES();
    CHECK(checkBootstrap(Bootstrap(kBoot22)).inodes == 3);
    CHECK(checkBootstrap(openImage(kInlineBlob).bootstrap).inodes == 4);
}

TEST_CASE("chunk size bits in i_u must agree with the superblock", "[check]") {
    BuiltImage img;
    const uint64_t i_u = img.inodeOffset("/big") + offsetof(erofs::InodeCompact, i_u);
    REQUIRE((get<uint16_t>(img.bytes, i_u) & erofs::kChunkFormatBlkbits) == 4);  // 64 KiB
    const std::string where = "nid " + std::to_string(img.nid("/big")) + " (\"/big\")";
    // 4 KiB kernel chunks: the kernel would read chunk indexes 1..48 for what rafsd serves as 1..3.
    CHECK_THAT(errorOf(with<uint16_t>(img.bytes, i_u, erofs::kChunkFormatIndexes | 0)),
               Contains(where) && Contains("i_u chunk format 0x20") && Contains("4096-byte chunks"));
    // 32 KiB: smaller than the superblock's chunk, also wrong.
    CHECK_THAT(errorOf(with<uint16_t>(img.bytes, i_u, erofs::kChunkFormatIndexes | 3)), Contains("i_u chunk format 0x23"));
    // A file within one kernel chunk is mapped alike whatever the bits: /dir/small, 100 bytes.
    const uint64_t small_i_u = img.inodeOffset("/dir/small") + offsetof(erofs::InodeCompact, i_u);
    CHECK(errorOf(with<uint16_t>(img.bytes, small_i_u, erofs::kChunkFormatIndexes | 0)).empty());
    // 256 KiB: one kernel chunk covers the file, and its chunks are one contiguous run in the
    // blob: Nydus's page-cache-sharing layout, which the kernel reads through the first index.
    CHECK(errorOf(with<uint16_t>(img.bytes, i_u, erofs::kChunkFormatIndexes | 6)).empty());
    // 128 KiB covers only half of it.
    CHECK_THAT(errorOf(with<uint16_t>(img.bytes, i_u, erofs::kChunkFormatIndexes | 5)), Contains("i_u chunk format 0x25"));
    // Not contiguous: the second index points back at the first chunk's place.
    std::vector<uint8_t> gap = with<uint16_t>(img.bytes, i_u, erofs::kChunkFormatIndexes | 6);
    put<uint32_t>(gap, img.chunkArray("/big") + sizeof(ChunkAddr) + offsetof(ChunkAddr, c_blk_addr), 0);
    CHECK_THAT(errorOf(gap), Contains("not one contiguous run"));
}

TEST_CASE("chunk indexes must agree with the chunk info table", "[check]") {
    BuiltImage img;
    const uint64_t array = img.chunkArray("/big");
    const uint64_t second = array + sizeof(ChunkAddr);
    const std::string where = "nid " + std::to_string(img.nid("/big")) + " (\"/big\"): chunk 1";
    // Another aligned place inside the blob: the kernel would read the first chunk's bytes.
    CHECK_THAT(errorOf(with<uint32_t>(img.bytes, second + offsetof(ChunkAddr, c_blk_addr), 0)),
               Contains(where) && Contains("disagrees with the chunk info table"));
    // Another ci index of the same blob: rafsd would verify with another chunk's digest.
    CHECK_THAT(errorOf(with<uint16_t>(img.bytes, second + offsetof(ChunkAddr, c_blob_addr_lo), 0)),
               Contains(where) && Contains("disagrees with the chunk info table"));
    // A table without its last entry: some chunk index has no digest in it.
    const Bootstrap b = img.load();
    const uint64_t table = b.extSuperBlock().s_chunk_table_offset;
    CHECK_THAT(errorOf(with<uint64_t>(img.bytes, kExtSuperOffset + offsetof(SuperBlockExt, s_chunk_table_size),
                                      b.extSuperBlock().s_chunk_table_size - sizeof(ChunkInfo))),
               Contains("is missing from the chunk info table"));
    // Two entries for one ci that disagree.
    std::vector<uint8_t> twice = img.bytes;
    put<uint32_t>(twice, table + sizeof(ChunkInfo) + offsetof(ChunkInfo, index), b.chunkInfos()[0].index);
    CHECK_THAT(errorOf(std::move(twice)), Contains("two different entries"));
}

TEST_CASE("superblock and device slot fields the kernel reads", "[check]") {
    BuiltImage img;
    const uint64_t sb = erofs::kSuperOffset;
    CHECK_THAT(errorOf(with<uint32_t>(img.bytes, sb + offsetof(erofs::SuperBlock, feature_compat),
                                      kFeatureCompatRafsV6 | erofs::kFeatureCompatSbChksum)),
               Contains("feature_compat 0x40000001"));
    CHECK_THAT(errorOf(with<uint8_t>(img.bytes, sb + offsetof(erofs::SuperBlock, dirblkbits), 1)), Contains("dirblkbits 1"));
    CHECK_THAT(errorOf(with<uint8_t>(img.bytes, sb + offsetof(erofs::SuperBlock, xattr_prefix_count), 2)),
               Contains("xattr_prefix_count 2"));
    CHECK_THAT(errorOf(with<uint64_t>(img.bytes, sb + offsetof(erofs::SuperBlock, packed_nid), 130)), Contains("packed_nid 130"));
    // An uncompressed size that is not whole blocks (the device slot's blocks still agree).
    const Bootstrap b = img.load();
    const uint64_t usize = b.extSuperBlock().s_blob_table_offset + offsetof(BlobTableEntry, uncompressed_size);
    CHECK_THAT(errorOf(with<uint64_t>(img.bytes, usize, b.blobs()[0].uncompressed_size + 100)),
               Contains("blob 0") && Contains("is not a multiple of 4096"));
    // mapped_blkaddr inside the bootstrap: the kernel would read directories from the blob.
    CHECK_THAT(errorOf(with<uint32_t>(img.bytes, kDeviceTableOffset + offsetof(erofs::DeviceSlot, mapped_blkaddr), 1)),
               Contains("device slot 0") && Contains("mapped_blkaddr 1"));
    // A plain EROFS image: no RAFS bit, so no extended superblock.
    CHECK_THAT(errorOf(with<uint32_t>(img.bytes, sb + offsetof(erofs::SuperBlock, feature_compat), 0)),
               Contains("t.boot: a plain EROFS image (made by mkfs.erofs?)") && Contains("mount -t erofs") &&
                   Contains("mkrafs build"));
}

TEST_CASE("inode fields by file type", "[check]") {
    BuiltImage img;
    auto where = [&](const std::string& path) { return "nid " + std::to_string(img.nid(path)) + " (\"" + path + "\")"; };
    // i_nlink and i_size sit at other offsets, with other widths, in the two inode versions.
    auto setNlink = [&](const std::string& path, uint32_t nlink) {
        const uint64_t off = img.inodeOffset(path);
        if (img.load().inode(img.nid(path)).extended) return with<uint32_t>(img.bytes, off + offsetof(erofs::InodeExtended, i_nlink), nlink);
        return with<uint16_t>(img.bytes, off + offsetof(erofs::InodeCompact, i_nlink), static_cast<uint16_t>(nlink));
    };
    auto setSize = [&](const std::string& path, uint32_t size) {
        const uint64_t off = img.inodeOffset(path);
        if (img.load().inode(img.nid(path)).extended) return with<uint64_t>(img.bytes, off + offsetof(erofs::InodeExtended, i_size), size);
        return with<uint32_t>(img.bytes, off + offsetof(erofs::InodeCompact, i_size), size);
    };
    CHECK_THAT(errorOf(setNlink("/dir/small", 0)), Contains(where("/dir/small")) && Contains("i_nlink is 0"));
    CHECK_THAT(errorOf(setSize("/fifo", 10)), Contains(where("/fifo")) && Contains("i_size 10 of a device, fifo or socket"));
    CHECK_THAT(errorOf(setSize("/dir/link", 0)), Contains(where("/dir/link")) && Contains("symlink i_size 0"));
    CHECK_THAT(errorOf(setSize("/dir/link", 4096)), Contains("symlink i_size 4096"));
    const Bootstrap b = img.load();
    const uint64_t target = b.inode(img.nid("/dir/link")).inline_offset;
    CHECK_THAT(errorOf(with<uint8_t>(img.bytes, target + 2, 0)), Contains(where("/dir/link")) && Contains("NUL"));
    // A regular file whose data would come from the bootstrap, where no chunk digest covers it.
    const uint64_t small = img.inodeOffset("/dir/small");
    const uint16_t version = get<uint16_t>(img.bytes, small) & 1;
    CHECK_THAT(errorOf(with<uint16_t>(img.bytes, small, erofs::inodeFormat(version, erofs::kFlatPlain))),
               Contains(where("/dir/small")) && Contains("data layout 0 of a regular file"));
    // The same from the synthetic image, whose /acl keeps its data inline.
    const SyntheticImage synthetic;
    CHECK_THAT(errorOf(synthetic.bytes), Contains("nid 136 (\"/acl\"): data layout 2 of a regular file"));
}

TEST_CASE("xattr names", "[check]") {
    SyntheticImage img;
    // /acl's first entry, user.comment, moved to the ACL index: "system.posix_acl_accesscomment".
    const uint64_t first = SyntheticImage::offsetOf(SyntheticImage::kAclNid) + 64 + sizeof(erofs::XattrIbodyHeader);
    CHECK_THAT(errorOf(with<uint8_t>(img.bytes, first + offsetof(erofs::XattrEntry, e_name_index),
                                     erofs::kXattrPosixAclAccess)),
               Contains("nid 136 (\"/acl\"): xattr name \"system.posix_acl_accesscomment\" is not an ACL"));
    // A NUL inside the name.
    CHECK_THAT(errorOf(with<uint8_t>(img.bytes, first + sizeof(erofs::XattrEntry) + 3, 0)), Contains("holds a NUL"));
}

TEST_CASE("inodes, directories and the prefetch table", "[check]") {
    BuiltImage img;
    const Bootstrap b = img.load();
    const Inode root = b.inode(b.rootNid());
    const uint64_t dirents = root.layout == erofs::kFlatInline ? root.inline_offset : uint64_t{root.raw_blkaddr} * 4096;
    // The root's entries: ".", "..", "big", "dir", "fifo"; make "big"'s dirent name an inode
    // inside the chunk info table.
    const uint64_t table = b.extSuperBlock().s_chunk_table_offset;
    const uint64_t table_nid = (table - uint64_t{b.superBlock().meta_blkaddr} * 4096) / 32;
    CHECK_THAT(errorOf(with<uint64_t>(img.bytes, dirents + 2 * sizeof(erofs::Dirent), table_nid)),
               Contains("nid " + std::to_string(table_nid)));
    // A NUL inside a name that is not the last.
    const uint16_t big_name = get<uint16_t>(img.bytes, dirents + 2 * sizeof(erofs::Dirent) + 8);
    CHECK_THAT(errorOf(with<uint8_t>(img.bytes, dirents + big_name + 1, 0)), Contains("invalid name"));
    // Names out of order.
    CHECK_THAT(errorOf(with<uint8_t>(img.bytes, dirents + big_name, 'z')), Contains("out of order"));
    // A name with a newline, out of order too: the error names it escaped, on one line.
    const std::string newline = errorOf(with<uint8_t>(img.bytes, dirents + big_name, '\n'));
    CHECK_THAT(newline, Contains("dirent \"\\nig\" is out of order"));
    CHECK(newline.find('\n') == std::string::npos);
    // "." naming another directory.
    CHECK_THAT(errorOf(with<uint64_t>(img.bytes, dirents, img.nid("/dir"))), Contains("'.' names nid"));

    // The prefetch table names /big; a nid that no directory reaches is refused.
    const uint64_t prefetch = b.extSuperBlock().s_prefetch_table_offset;
    REQUIRE(get<uint32_t>(img.bytes, prefetch) == img.nid("/big"));
    CHECK(errorOf(img.bytes).empty());
    CHECK_THAT(errorOf(with<uint32_t>(img.bytes, prefetch, static_cast<uint32_t>(b.rootNid() + 1))),
               Contains("prefetch table entry 0: nid " + std::to_string(b.rootNid() + 1)));
}

TEST_CASE("chunk indexes against the blobs' ci entries, for images without a chunk info table", "[check]") {
    BuiltImage img(false);
    const std::vector<BlobChunk> ci = img.blobChunks();
    const Bootstrap good = img.load();
    REQUIRE(good.chunkInfos().empty());
    CHECK_NOTHROW(checkChunkIndexes(good, checkBootstrap(good), {ci}));
    // /big's second index moved onto its first chunk: the bootstrap alone cannot tell.
    std::vector<uint8_t> moved = with<uint32_t>(img.bytes, img.chunkArray("/big") + sizeof(ChunkAddr) + offsetof(ChunkAddr, c_blk_addr), 0);
    const Bootstrap bad(moved, "t.boot");
    BootstrapSummary checked;
    REQUIRE_NOTHROW(checked = checkBootstrap(bad));
    CHECK_THROWS_WITH(checkChunkIndexes(bad, checked, {ci}),
                      Contains("nid " + std::to_string(img.nid("/big")) + " (\"/big\"): chunk 1") &&
                          Contains("disagrees with the blob's ci entry"));
    // A blob that is not at hand is not checked.
    CHECK_NOTHROW(checkChunkIndexes(bad, checked, {std::span<const BlobChunk>()}));
    // A summary that is not this bootstrap's check would check nothing.
    CHECK_THROWS_AS(checkChunkIndexes(bad, BootstrapSummary{}, {ci}), std::logic_error);
}
