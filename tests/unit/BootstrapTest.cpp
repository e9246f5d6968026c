#include "ImageTestUtil.h"

#include "format/BlobFile.h"
#include "format/Bootstrap.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <random>

using namespace rafs;
using namespace rafs::test;
using Catch::Matchers::Contains;

namespace {

// Offsets in rafs-v6-2.2.boot, a Nydus fixture (layout: nydus rafs/src/metadata/layout/v6.rs).
constexpr uint64_t kRootOff = 12288;                // nid 128, extended FLAT_INLINE directory
constexpr uint64_t kRootDirents = kRootOff + 64;    // ".", "..", "lib.rs", "sync_io.rs"
constexpr uint64_t kLibRsChunk = 12448 + 64;        // nid 133's only chunk index
constexpr uint64_t kSyncIoChunk = 12544 + 64;       // nid 136's only chunk index

// Loads and walks everything reachable; the way every test below consumes a bootstrap.
size_t walkAll(const Bootstrap& b) {
    size_t n = 0;
    b.walk([&](const std::string&, const Inode& ino) {
        ++n;
        if (ino.isLink()) b.readData(ino.nid);
    });
    return n;
}

void checkMalformed(std::vector<uint8_t> image, const std::string& message) {
    CHECK_THROWS_WITH(walkAll(Bootstrap(std::move(image), "bad.boot")), Contains(message));
}

}  // namespace

TEST_CASE("rafs-v6-2.2.boot parses with the values nydus-image wrote into it", "[format]") {
    RAFS_REQUIRE_FIXTURES();
    const Bootstrap b(kBoot22);
    const erofs::SuperBlock& sb = b.superBlock();
    CHECK(sb.root_nid == 128);
    CHECK(sb.inos == 3);
    CHECK(sb.blocks == 9);
    CHECK(sb.meta_blkaddr == 2);
    CHECK(sb.extra_devices == 1);
    CHECK(b.flags() == 0x194);
    CHECK(b.compressor() == Compressor::Zstd);
    CHECK(b.digester() == Digester::Blake3);
    CHECK(b.chunkSize() == 0x100000);
    CHECK(b.extSuperBlock().s_blob_table_offset == 4096);
    CHECK(b.extSuperBlock().s_chunk_table_offset == 16384);
    CHECK(b.prefetchNids().empty());

    REQUIRE(b.blobs().size() == 1);
    const BootstrapBlob& blob = b.blobs()[0];
    CHECK(blob.id == kBlob22Id);
    CHECK(blob.chunk_count == 2);
    CHECK(blob.compressor == Compressor::Zstd);
    CHECK(blob.digester == Digester::Blake3);
    CHECK(blob.features == 0x70000021);
    CHECK(blob.compressed_size == 14554);
    CHECK(blob.uncompressed_size == 36864);
    CHECK(blob.ci_compressor == Compressor::None);
    CHECK((blob.ci_offset == 8314 && blob.ci_compressed_size == 32 && blob.ci_uncompressed_size == 32));
    CHECK(blob.toc_size == 1024);
    CHECK(toHex(blob.toc_digest).substr(0, 16) == "cfc89ed0739aef4e");
    CHECK(blob.mapped_blkaddr == 512);

    REQUIRE(b.chunkInfos().size() == 2);
    CHECK(b.chunkInfos()[0].index == 1);  // sorted by digest: 8124... before f7e2...
    CHECK(b.chunkInfos()[0].uncompressed_offset == 20480);
    CHECK(b.chunkInfos()[1].uncompressed_size == 16931);

    const Inode root = b.inode(128);
    CHECK(root.isDir());
    CHECK(root.extended);
    CHECK(root.layout == erofs::kFlatInline);
    CHECK(root.size == 67);
    CHECK(root.nlink == 2);
    const std::vector<DirEntry> entries = b.readDir(128);
    REQUIRE(entries.size() == 4);
    CHECK((entries[0].name == "." && entries[0].nid == 128 && entries[0].file_type == erofs::kFtDirectory));
    CHECK((entries[1].name == ".." && entries[1].nid == 128));
    CHECK((entries[2].name == "lib.rs" && entries[2].nid == 133 && entries[2].file_type == erofs::kFtRegular));
    CHECK((entries[3].name == "sync_io.rs" && entries[3].nid == 136));

    REQUIRE(b.lookup("/lib.rs") == 133u);
    const Inode lib = b.inode(133);
    CHECK(lib.isReg());
    CHECK(lib.size == 16931);
    CHECK(lib.mode == (S_IFREG | 0644));
    CHECK(lib.mtime == 1676819553);
    CHECK(lib.mtime_nsec == 628661334);
    REQUIRE(lib.chunks.size() == 1);
    CHECK((lib.chunks[0].blob_index == 0 && lib.chunks[0].ci_index == 0 && lib.chunks[0].uncompressed_offset == 0 &&
           lib.chunks[0].file_offset == 0 && lib.chunks[0].length == 16931));

    REQUIRE(b.lookup("sync_io.rs") == 136u);
    const Inode sync = b.inode(136);
    REQUIRE(sync.chunks.size() == 1);
    CHECK((sync.chunks[0].ci_index == 1 && sync.chunks[0].uncompressed_offset == 20480 && sync.chunks[0].length == 13400));

    CHECK(b.lookup("/") == 128u);
    CHECK(!b.lookup("/missing"));
    CHECK(!b.lookup("/lib.rs/below-a-file"));

    std::vector<std::string> paths;
    b.walk([&](const std::string& path, const Inode&) { paths.push_back(path); });
    CHECK(paths == std::vector<std::string>{"/", "/lib.rs", "/sync_io.rs"});
}

TEST_CASE("an inline bootstrap is extracted from its blob", "[format]") {
    RAFS_REQUIRE_FIXTURES();
    const Image image = openImage(kInlineBlob);
    CHECK(image.inline_meta);
    const Bootstrap& b = image.bootstrap;
    CHECK(b.bytes().size() == 20480);
    REQUIRE(b.blobs().size() == 1);
    CHECK(b.blobs()[0].id == kInlineBlobId);
    CHECK(b.blobs()[0].features == kBlobAligned);
    CHECK(image.blobPath(0, "") == kInlineBlob);
    CHECK(walkAll(b) == 4);
    REQUIRE(b.lookup("/logger.rs"));
    CHECK(b.inode(*b.lookup("/logger.rs")).chunks.at(0).ci_index == 2);

    const Image plain = openImage(kBoot22);
    CHECK(!plain.inline_meta);
    CHECK(plain.blobPath(0, "") == kFixtureDir + "/" + kBlob22Id);
    CHECK(plain.blobPath(0, "/elsewhere") == "/elsewhere/" + kBlob22Id);
}

TEST_CASE("malformed bootstraps give errors", "[format]") {
    RAFS_REQUIRE_FIXTURES();
    const std::vector<uint8_t> good = readFile(kBoot22);
    REQUIRE_NOTHROW(walkAll(Bootstrap(good, "good")));
    auto mutated = [&](auto mutate) {
        std::vector<uint8_t> image = good;
        mutate(image);
        return image;
    };

    SECTION("truncated") {
        checkMalformed({}, "not a RAFS v6 bootstrap (only 0 bytes)");
        checkMalformed(std::vector<uint8_t>(good.begin(), good.begin() + 1000), "not a RAFS v6 bootstrap");
        checkMalformed(std::vector<uint8_t>(good.begin(), good.begin() + 3000), "not a multiple of 4096");
        checkMalformed(std::vector<uint8_t>(good.begin(), good.begin() + 16384), "invalid chunk table");
        checkMalformed(std::vector<uint8_t>(good.begin(), good.begin() + 12288), "invalid chunk table");
    }
    SECTION("bad magic and RAFS v5") {
        checkMalformed(mutated([](auto& img) { img[1024] = 0; }), "not a RAFS v6 bootstrap (bad magic 0xe0f5e100)");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 0, 0x52414653); }), "RAFS v5");
        std::vector<uint8_t> text(8192, 'x');
        CHECK_THROWS_WITH(Bootstrap(text, "notes.txt"), Contains("notes.txt: not a RAFS v6 bootstrap (bad magic 0x78787878)"));
    }
    SECTION("superblock fields") {
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, 1024 + 88, 12); }), "device table slot offset 12");
        checkMalformed(mutated([](auto& img) { img[1024 + 12] = 9; }), "tarfs");
        checkMalformed(mutated([](auto& img) { img[1024 + 13] = 1; }), "extslots");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 1024 + 4, 1); }), "checksum");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 1024 + 80, 0x1c); }), "incompatible features");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 1024 + 44, 1); }), "shared xattr");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 1024 + 40, 5); }), "meta block address");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, 1024 + 86, 2); }), "blob table has 1 entries");
    }
    SECTION("extended superblock fields") {
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 1152, 0x1d4); }), "exactly one compression bit");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 1152, 0x196); }), "exactly one compression bit");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 1152, 0x19c); }), "exactly one hash bit");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 1152 + 20, 0x100001); }), "chunk size");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 1152 + 20, 0x800); }), "chunk size");
    }
    SECTION("blob, chunk and prefetch tables") {
        // Blob table overlapping the device table, misaligned, or past the end.
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 1152 + 8, 0); }), "invalid blob table");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 1152 + 8, 4100); }), "invalid blob table");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 1152 + 8, 20480); }), "invalid blob table");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 1152 + 16, 300); }), "invalid blob table");
        // Chunk table placed on the blob table.
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 1152 + 24, 4096); }), "overlaps the blob table");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 1152 + 32, 100); }), "invalid chunk table");
        // Prefetch table on the chunk table.
        checkMalformed(mutated([](auto& img) {
            put<uint64_t>(img, 1152 + 40, 16384);
            put<uint32_t>(img, 1152 + 48, 8);
        }), "invalid prefetch table");
        checkMalformed(mutated([](auto& img) { img[4096] = 'g'; }), "not 64 hex");
        checkMalformed(mutated([](auto& img) { img[1408] = 'c'; }), "device tag");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 1408 + 64, 10); }), "device blocks 10");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 4096 + 64, 1); }), "blob_index 1");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 4096 + 76, 7); }), "unknown compression algorithm 7");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 4096 + 84, 0x70000020); }), "lack ALIGNED");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 4096 + 84, 0x70000029); }), "unsupported features");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 4096 + 72, 3); }), "ci size 32 does not match 3");
        // A chunk-dict-generated blob is exempt from that size check, not from the bounds: rafsd
        // would read the ci header from far past its buffer.
        const auto chunkdict = [&](uint64_t offset, uint64_t compressed, uint64_t uncompressed) {
            return mutated([&](auto& img) {
                uint32_t features = 0;
                std::memcpy(&features, img.data() + 4096 + 84, sizeof features);
                put<uint32_t>(img, 4096 + 84, features | 0x200);
                put<uint64_t>(img, 4096 + 112, offset);
                put<uint64_t>(img, 4096 + 120, compressed);
                put<uint64_t>(img, 4096 + 128, uncompressed);
            });
        };
        REQUIRE_NOTHROW(Bootstrap(chunkdict(8314, 32, 32), "chunkdict"));
        checkMalformed(chunkdict(0, 0xFFFFFFFFFFFFF000, UINT64_MAX), "invalid ci range");
        checkMalformed(chunkdict(0, 16, UINT64_MAX), "invalid ci range");
        checkMalformed(chunkdict(0, 1ULL << 36, 1ULL << 36), "invalid ci range");
        checkMalformed(chunkdict((1ULL << 40) - 100, 32, 32), "invalid ci range");
        // Chunk table entries pointing past the blobs or ci arrays.
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 16384 + 32, 1); }), "names blob 1");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, 16384 + 72, 2); }), "ci index 2");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 16384 + 56, 36864); }), "uncompressed range");
        // A compressed chunk of 4 GiB, or at 1 TiB: rafsd would size a fetch buffer by it.
        checkMalformed(mutated([](auto& img) {
            put<uint32_t>(img, 16384 + 36, 1);
            put<uint32_t>(img, 16384 + 40, 0xffffffff);
        }), "compressed range");
        checkMalformed(mutated([](auto& img) {
            put<uint32_t>(img, 16384 + 36, 1);
            put<uint64_t>(img, 16384 + 48, (1ULL << 40) - 8);
        }), "compressed range");
    }
    SECTION("chunk indexes") {
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kLibRsChunk, 2); }), "ci index 2, but blob 0 has 2 chunks");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kLibRsChunk + 2, 0x0101); }), "ci index 65536");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kLibRsChunk + 2, 2); }), "device 2, but the image has 1 blobs");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kLibRsChunk + 2, 0); }), "device 0");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, kSyncIoChunk + 4, 6); }), "outside blob 0");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, kSyncIoChunk + 4, 0xffffffff); }), "hole");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, 12448 + 16, 0x28 | 0x40); }), "chunk format 0x68");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, 12448 + 16, 0x08); }), "chunk format 0x8");
        // A size needing 2^40 chunk indexes.
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, 12448 + 8, 1ULL << 60); }), "run past the end");
    }
    SECTION("inodes and directories") {
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootDirents + 12 + 8, 200); }), "name at 48..200 out of bounds");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootDirents + 24 + 8, 40); }), "name at 49..40 out of bounds");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootDirents + 8, 50); }), "first nameoff 50");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootDirents + 8, 0); }), "first nameoff 0");
        checkMalformed(mutated([](auto& img) { img[kRootDirents + 51] = 'z'; }), "out of order");
        checkMalformed(mutated([](auto& img) { img[kRootDirents + 52] = '/'; }), "invalid name");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, kRootDirents + 24, 1ULL << 40); }), "nid 1099511627776 is past the end");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, kRootDirents + 24, UINT64_MAX); }), "past the end");
        checkMalformed(mutated([](auto& img) { img[kRootDirents + 24 + 10] = erofs::kFtSymlink; }), "disagrees with nid 133");
        checkMalformed(mutated([](auto& img) { img[kRootDirents + 24 + 10] = 9; }), "invalid file type 9");
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, kRootDirents + 12, 133); }), "'..' names nid 133");
        // lib.rs's dirent names the root as a directory: the root is reached twice.
        checkMalformed(mutated([](auto& img) {
            put<uint64_t>(img, kRootDirents + 24, 128);
            img[kRootDirents + 24 + 10] = erofs::kFtDirectory;
        }), "reached twice");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootOff, 0x11); }), "unsupported i_format 0x11");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootOff, 0x3); }), "unsupported data layout 1");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootOff + 4, 0); }), "invalid file mode");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootOff + 4, S_IFREG | 0644); }), "root nid 128 is not a directory");
        // Inline tail growing across the block boundary.
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, kRootOff + 8, 4095); }), "crosses a block boundary");
        // A size of whole blocks: the kernel still reads the last block inline, after the inode,
        // not from i_u's blocks.
        checkMalformed(mutated([](auto& img) { put<uint64_t>(img, kRootOff + 8, 4096); }), "crosses a block boundary");
        checkMalformed(mutated([](auto& img) { put<uint16_t>(img, kRootOff + 2, 200); }), "xattr");
        checkMalformed(mutated([](auto& img) { put<uint32_t>(img, kRootOff + 40, 1000000000); }), "nanoseconds");
    }
}

TEST_CASE("random corruption of a bootstrap never crashes", "[format]") {
    RAFS_REQUIRE_FIXTURES();
    const std::vector<uint8_t> good = readFile(kBoot22);
    std::mt19937 rng(7);
    // Mostly the bytes that mean something: superblocks, tables, inodes, dirents, chunk table.
    const std::pair<uint64_t, uint64_t> regions[] = {{1024, 1536}, {4096, 4352}, {12288, 12800}, {16384, 16544}, {0, 20480}};
    size_t accepted = 0;
    for (int i = 0; i < 4000; ++i) {
        std::vector<uint8_t> image = good;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
            const auto& [lo, hi] = regions[rng() % std::size(regions)];
            image[lo + rng() % (hi - lo)] = static_cast<uint8_t>(rng());
        }
        try {
            const Bootstrap b(std::move(image), "fuzz");
            walkAll(b);
            for (uint32_t nid : b.prefetchNids()) b.inode(nid);
            ++accepted;
        } catch (const Error&) {
            // Expected for most mutations; anything else than rafs::Error fails the test.
        }
    }
    CHECK(accepted > 0);
}

TEST_CASE("every entry type, xattrs and hardlinks parse", "[format]") {
    const SyntheticImage image;
    const Bootstrap b(image.bytes, "synthetic");
    CHECK(b.blobs().empty());

    std::vector<std::string> paths;
    b.walk([&](const std::string& path, const Inode&) { paths.push_back(path); });
    CHECK(paths == std::vector<std::string>{"/", "/acl", "/blk", "/chr", "/fifo", "/hard", "/link", "/sock", "/sub",
                                            "/sub/f"});

    const Inode acl = b.inode(SyntheticImage::kAclNid);
    CHECK(acl.isReg());
    CHECK((acl.uid == 1000 && acl.gid == 1001 && acl.nlink == 2));
    REQUIRE(acl.xattrs.size() == 3);
    CHECK(acl.xattrs[0] == std::make_pair(std::string("user.comment"), std::string("x")));
    CHECK(acl.xattrs[1] == std::make_pair(std::string("system.posix_acl_access"), SyntheticImage::kAclValue));
    CHECK(acl.xattrs[2] == std::make_pair(std::string("security.selinux"), std::string("system_u:object_r:etc_t:s0")));
    const std::vector<uint8_t> data = b.readData(SyntheticImage::kAclNid);
    CHECK(std::string(data.begin(), data.end()) == "hello\n");
    CHECK(b.lookup("/hard") == SyntheticImage::kAclNid);

    const std::vector<uint8_t> target = b.readData(SyntheticImage::kLinkNid);
    CHECK(std::string(target.begin(), target.end()) == "acl");
    const Inode chr = b.inode(SyntheticImage::kChrNid);
    CHECK(chr.isDevice());
    CHECK((erofs::devMajor(chr.rdev) == 1 && erofs::devMinor(chr.rdev) == 3));
    CHECK((chr.mtime == 1700000000 && chr.mtime_nsec == 123456789));
    CHECK(erofs::devMajor(b.inode(SyntheticImage::kBlkNid).rdev) == 8);
    CHECK(S_ISFIFO(b.inode(SyntheticImage::kFifoNid).mode));
    CHECK(S_ISSOCK(b.inode(SyntheticImage::kSockNid).mode));
    REQUIRE(b.lookup("/sub/f") == SyntheticImage::kFNid);
    const Inode f = b.inode(SyntheticImage::kFNid);
    CHECK((f.layout == erofs::kChunkBased && f.size == 0 && f.chunks.empty()));
    // A compact inode: its mtime is the superblock's build time.
    CHECK((!f.extended && f.uid == 7 && f.nlink == 1 && f.mtime == 1234 && f.mtime_nsec == 5));
    CHECK(b.prefetchNids() == std::vector<uint32_t>{SyntheticImage::kAclNid});
    CHECK_THROWS_WITH(b.readData(SyntheticImage::kFNid), Contains("not stored in the bootstrap"));
    CHECK_THROWS_WITH(b.readDir(SyntheticImage::kAclNid), Contains("not a directory"));
}

TEST_CASE("malformed xattrs, inline data and directories of the synthetic image", "[format]") {
    const SyntheticImage good;
    REQUIRE(walkAll(Bootstrap(good.bytes, "good")) == 10);
    const uint64_t acl = SyntheticImage::offsetOf(SyntheticImage::kAclNid);
    const uint64_t first_xattr = acl + 64 + 12;
    auto mutated = [&](auto mutate) {
        std::vector<uint8_t> image = good.bytes;
        mutate(image);
        return image;
    };
    checkMalformed(mutated([&](auto& img) { img[acl + 64 + 4] = 1; }), "shared xattrs");
    checkMalformed(mutated([&](auto& img) { img[first_xattr + 1] = 0x81; }), "unsupported xattr name index 0x81");
    checkMalformed(mutated([&](auto& img) { img[first_xattr + 1] = 0; }), "unsupported xattr name index 0x0");
    checkMalformed(mutated([&](auto& img) { put<uint16_t>(img, first_xattr + 2, 300); }), "runs past the inline xattr area");
    checkMalformed(mutated([&](auto& img) { img[first_xattr] = 0; }), "empty name");
    // icount one short: the last entry no longer fits.
    checkMalformed(mutated([&](auto& img) { put<uint16_t>(img, acl + 2, static_cast<uint16_t>(get<uint16_t>(img, acl + 2) - 1)); }),
                   "runs past the inline xattr area");
    checkMalformed(mutated([&](auto& img) { put<uint16_t>(img, acl + 2, 0xffff); }), "run past the end of the image");
    // The symlink's inline target grows across the end of its block.
    checkMalformed(mutated([&](auto& img) { put<uint64_t>(img, SyntheticImage::offsetOf(SyntheticImage::kLinkNid) + 8, 4000); }),
                   "crosses a block boundary");
    // A FLAT_PLAIN directory whose blocks lie past the end of the image.
    checkMalformed(mutated([&](auto& img) { put<uint32_t>(img, SyntheticImage::offsetOf(SyntheticImage::kSubNid) + 16, 5); }),
                   "run past the end of the image");
    // /sub without '.'.
    checkMalformed(mutated([&](auto& img) { img[3 * 4096 + 36] = '-'; }), "lacks '.' or '..'");
    // Chunk-based layout on a directory.
    checkMalformed(mutated([&](auto& img) {
        put<uint16_t>(img, SyntheticImage::offsetOf(SyntheticImage::kSubNid),
                      erofs::inodeFormat(erofs::kInodeVersionExtended, erofs::kChunkBased));
    }), "chunk-based layout on a non-regular file");
}

TEST_CASE("directories spanning several blocks", "[format]") {
    SyntheticImage image;
    image.bytes.resize(7 * 4096);
    std::vector<std::pair<std::string, std::pair<uint64_t, uint8_t>>> entries = {
        {".", {SyntheticImage::kSubNid, erofs::kFtDirectory}}, {"..", {SyntheticImage::kRootNid, erofs::kFtDirectory}}};
    for (int i = 0; i < 300; ++i) entries.push_back({fmt::format("f{:03}", i), {SyntheticImage::kFNid, erofs::kFtRegular}});
    const uint64_t size = image.putDir(5, entries);
    REQUIRE(size == 4096 + 46 * 16);  // 256 entries fill block 5 (".", ".." are shorter), 46 follow
    image.inode(SyntheticImage::kSubNid, S_IFDIR | 0755, size, erofs::kFlatPlain, 5, 2);

    const Bootstrap b(image.bytes, "big-dir");
    const std::vector<DirEntry> listed = b.readDir(SyntheticImage::kSubNid);
    REQUIRE(listed.size() == 302);
    CHECK(listed[255].name == "f253");
    CHECK(listed[256].name == "f254");
    CHECK(listed[301].name == "f299");
    CHECK(b.lookup("/sub/f299") == SyntheticImage::kFNid);
    CHECK(b.lookup("/sub/f254") == SyntheticImage::kFNid);
    CHECK(walkAll(b) == 9 + 300);

    // The first name of the second block sorts before the last one of the first block.
    std::vector<uint8_t> bad = image.bytes;
    bad[6 * 4096 + 46 * 12] = 'a';
    checkMalformed(bad, "\"a254\" is out of order after \"f253\"");
    // A FLAT_INLINE directory of more than one block keeps its full blocks at i_u.
    bad = image.bytes;
    put<uint16_t>(bad, SyntheticImage::offsetOf(SyntheticImage::kSubNid),
                  erofs::inodeFormat(erofs::kInodeVersionExtended, erofs::kFlatInline));
    checkMalformed(bad, "first nameoff 0");  // the tail is read after the inode, where there is no dirent
}
