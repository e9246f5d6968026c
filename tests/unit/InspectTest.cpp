#include "ImageTestUtil.h"
#include "SourceTestUtil.h"

#include "builder/commands/Inspect.h"
#include "builder/commands/Unpack.h"
#include "format/Codec.h"
#include "format/Digest.h"

#include <archive.h>
#include <archive_entry.h>
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <sstream>

using namespace rafs;
using namespace rafs::test;
using rafs::build::test::TempDir;
using Catch::Matchers::Contains;

namespace {

std::string inspectText(const std::string& bootstrap, const std::string& blob_dir, bool verbose = false) {
    std::ostringstream out;
    build::inspect(build::InspectOptions{bootstrap, blob_dir, verbose}, out);
    return out.str();
}

// A writable copy of the 2.2 fixture: DIR/image.boot and DIR/<blob id>.
struct FixtureCopy {
    TempDir dir;
    std::string boot = dir / "image.boot";
    std::string blob = dir / kBlob22Id;
    FixtureCopy() {
        writeFile(boot, readFile(kBoot22));
        writeFile(blob, readFile(kBlob22));
    }
    void patchBlob(uint64_t offset, uint8_t xor_mask) const {
        std::vector<uint8_t> data = readFile(kBlob22);
        data.at(offset) ^= xor_mask;
        writeFile(blob, data);
    }
};

struct TarEntry {
    std::string type;  // "file", "dir", "link", "hardlink", "chr", "blk", "fifo"
    uint32_t mode = 0;
    int64_t size = 0;
    int64_t mtime = 0;
    long mtime_nsec = 0;
    std::string target;  // symlink or hardlink target
    unsigned major = 0, minor = 0;
    std::map<std::string, std::string> xattrs;
    std::string data;
};

std::map<std::string, TarEntry> readTar(const std::string& path) {
    std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
    archive_read_support_format_all(a.get());
    REQUIRE(archive_read_open_filename(a.get(), path.c_str(), 10240) == ARCHIVE_OK);
    // pax, not any tar flavour: the format that carries nanoseconds and SCHILY.xattr.
    std::map<std::string, TarEntry> entries;
    archive_entry* e = nullptr;
    while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
        CHECK(archive_format(a.get()) == ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE);
        TarEntry t;
        t.mode = archive_entry_mode(e) & 07777;
        t.size = archive_entry_size(e);
        t.mtime = archive_entry_mtime(e);
        t.mtime_nsec = archive_entry_mtime_nsec(e);
        if (archive_entry_hardlink(e)) {
            t.type = "hardlink";
            t.target = archive_entry_hardlink(e);
        } else {
            switch (archive_entry_filetype(e)) {
            case AE_IFREG: t.type = "file"; break;
            case AE_IFDIR: t.type = "dir"; break;
            case AE_IFLNK: t.type = "link"; t.target = archive_entry_symlink(e); break;
            case AE_IFCHR: t.type = "chr"; break;
            case AE_IFBLK: t.type = "blk"; break;
            case AE_IFIFO: t.type = "fifo"; break;
            default: t.type = "other"; break;
            }
        }
        t.major = static_cast<unsigned>(archive_entry_rdevmajor(e));
        t.minor = static_cast<unsigned>(archive_entry_rdevminor(e));
        archive_entry_xattr_reset(e);
        const char* name = nullptr;
        const void* value = nullptr;
        size_t size = 0;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
            t.xattrs[name] = std::string(static_cast<const char*>(value), size);
        }
        char buf[4096];
        la_ssize_t n;
        while ((n = archive_read_data(a.get(), buf, sizeof(buf))) > 0) t.data.append(buf, static_cast<size_t>(n));
        REQUIRE(n == 0);
        entries[archive_entry_pathname(e)] = t;
    }
    return entries;
}

std::string decompressed(const std::vector<uint8_t>& blob, size_t offset, size_t size, size_t usize) {
    std::vector<uint8_t> out(usize);
    decompress(Compressor::Zstd, std::span(blob).subspan(offset, size), out);
    return std::string(out.begin(), out.end());
}

}  // namespace

TEST_CASE("inspect passes both Nydus fixtures", "[inspect]") {
    RAFS_REQUIRE_FIXTURES();
    const std::string native = inspectText(kBoot22, kFixtureDir, true);
    CHECK_THAT(native, Contains("superblock: root nid 128, inodes 3, blocks 9, meta_blkaddr 2, extra devices 1"));
    CHECK_THAT(native, Contains("flags 0x194 (zstd, blake3, explicit-uid-gid, inlined-chunk-digest)"));
    CHECK_THAT(native, Contains("blob 0: " + kBlob22Id));
    CHECK_THAT(native, Contains("/lib.rs"));
    CHECK_THAT(native, Contains("chunk at 0: blob 0 ci 1 uncompressed 0x5000+13400"));
    CHECK_THAT(native, Contains("toc: 4 entries, digests ok"));
    CHECK_THAT(native, Contains("ok: 3 inodes, 2 chunks verified\n"));

    // Pointed at the inline-meta blob itself: its bootstrap is extracted and checked against it.
    const std::string inline_meta = inspectText(kInlineBlob, "");
    CHECK_THAT(inline_meta, Contains("inline in the blob"));
    CHECK_THAT(inline_meta, Contains("blob 0: " + kInlineBlobId));
    CHECK_THAT(inline_meta, Contains("ok: 4 inodes, 3 chunks verified\n"));
}

TEST_CASE("inspect of an empty blob dir checks the bootstrap alone; a blob dir that is not there, or another image's, is an error", "[inspect]") {
    RAFS_REQUIRE_FIXTURES();
    TempDir empty;
    const std::string text = inspectText(kBoot22, empty.path().string());
    CHECK_THAT(text, Contains("the bootstrap alone was checked"));
    CHECK_THAT(text, Contains("ok: 3 inodes, 0 chunks verified"));
    CHECK_THROWS_WITH(inspectText(kBoot22, empty / "typo"), Contains("typo: no such directory"));
    // Another image's blob dir: no blob of this one, but files. Not a clean check of the bootstrap.
    TempDir other;
    writeFile(other / std::string(64, '0'), std::vector<uint8_t>(16, 1));
    CHECK_THROWS_WITH(inspectText(kBoot22, other.path().string()),
                      Contains("holds none of the image's 1 blobs (the first: ") &&
                          Contains("but other files: another image's blobs?"));
    // An image without blobs: 10 paths, /hard being /acl again. Its /acl keeps its data in the
    // bootstrap, where no chunk digest vouches for it: refused. As an empty chunk-based file
    // it passes.
    SyntheticImage synthetic;
    writeFile(empty / "synthetic.boot", synthetic.bytes);
    CHECK_THROWS_WITH(inspectText(empty / "synthetic.boot", ""), Contains("nid 136 (\"/acl\"): data layout 2 of a regular file"));
    const uint64_t acl_off = SyntheticImage::offsetOf(SyntheticImage::kAclNid);
    auto acl = get<erofs::InodeExtended>(synthetic.bytes, acl_off);
    acl.i_format = erofs::inodeFormat(erofs::kInodeVersionExtended, erofs::kChunkBased);
    acl.i_size = 0;
    acl.i_u = erofs::kChunkFormatIndexes | 8;  // 1 MiB chunks, the superblock's
    put(synthetic.bytes, acl_off, acl);
    writeFile(empty / "synthetic.boot", synthetic.bytes);
    CHECK_THAT(inspectText(empty / "synthetic.boot", ""), Contains("ok: 9 inodes, 0 chunks verified"));
    CHECK_THAT(inspectText(empty / "synthetic.boot", "", true), Contains("prefetch: nids 136"));
    put<uint32_t>(synthetic.bytes, 4096, 200);
    writeFile(empty / "synthetic.boot", synthetic.bytes);
    CHECK_THROWS_WITH(inspectText(empty / "synthetic.boot", ""), Contains("prefetch table entry 0: nid 200 is not an inode reachable"));
}

TEST_CASE("inspect names the blob and chunk of a corrupted byte", "[inspect]") {
    RAFS_REQUIRE_FIXTURES();
    FixtureCopy copy;
    REQUIRE_THAT(inspectText(copy.boot, ""), Contains("ok: 3 inodes, 2 chunks verified"));
    bool saw_digest_mismatch = false;
    bool saw_decompress_error = false;
    // Chunk 0 is [0, 4828), chunk 1 [4828, 7802): every corruption is caught, by zstd, by the
    // chunk digest, or at the latest by the ToC's sha256 of the whole chunk data.
    for (uint64_t offset = 0; offset < 7802; offset += 61) {
        copy.patchBlob(offset, 0x10);
        const std::string chunk = offset < 4828 ? "chunk 0" : "chunk 1";
        try {
            inspectText(copy.boot, "");
            FAIL("corruption at offset " << offset << " went unnoticed");
        } catch (const Error& e) {
            const std::string message = e.what();
            INFO(message);
            CHECK_THAT(message, Contains(kBlob22Id));
            if (message.find("differs from") != std::string::npos && message.find("blake3") != std::string::npos) {
                CHECK_THAT(message, Contains(chunk));
                saw_digest_mismatch = true;
            } else if (message.find("corrupt zstd") != std::string::npos) {
                CHECK_THAT(message, Contains("(" + chunk + ")"));
                saw_decompress_error = true;
            } else {
                CHECK_THAT(message, Contains("ToC entry 'image.blob'"));
            }
        }
    }
    CHECK(saw_digest_mismatch);
    CHECK(saw_decompress_error);
}

TEST_CASE("inspect rejects corrupted blob metadata", "[inspect]") {
    RAFS_REQUIRE_FIXTURES();
    FixtureCopy copy;
    auto expect = [&](uint64_t offset, const std::string& message) {
        copy.patchBlob(offset, 0x01);
        CHECK_THROWS_WITH(inspectText(copy.boot, ""), Contains(message) && Contains(kBlob22Id));
    };
    expect(8314 + 32, "bad ci header magic");                  // ci header magic
    expect(8314 + 32 + 4, "ci header features");                // ci header features
    expect(8314 + 3, "ci");                                     // ci entry 0: chunk moves
    expect(12954 + 5, "chunk table's digest");                  // blob.digest payload
    expect(13530 + 2 * 128 + 30, "ToC entry 'blob.meta.header'"); // a ToC digest
    expect(13530 + 3 * 128 + 60, "ToC entry 'blob.digest'");      // a ToC offset
    expect(14554 - 512, "bad checksum");                        // the ToC's tar header

    // Truncated, and grown by one byte (the tail no longer ends in a tar header).
    std::vector<uint8_t> data = readFile(kBlob22);
    writeFile(copy.blob, std::span(data).first(9000));
    CHECK_THROWS_WITH(inspectText(copy.boot, ""), Contains("do not fit the file"));
    data.push_back(0);
    writeFile(copy.blob, data);
    CHECK_THROWS_WITH(inspectText(copy.boot, ""), Contains("ends in no tar header"));

    // The inline blob's bootstrap no longer matches its ToC digest.
    TempDir dir;
    std::vector<uint8_t> inline_blob = readFile(kInlineBlob);
    inline_blob[7997 + 200] ^= 0x40;
    writeFile(dir / kInlineBlobName, inline_blob);
    CHECK_THROWS_WITH(inspectText(dir / kInlineBlobName, ""), Contains("image.boot"));
}

TEST_CASE("inspect checks chunk indexes against ci entries", "[inspect]") {
    RAFS_REQUIRE_FIXTURES();
    FixtureCopy copy;
    std::vector<uint8_t> boot = readFile(kBoot22);
    // /sync_io.rs claims block 4 (0x4000) of the blob while its ci entry starts at 0x5000.
    put<uint32_t>(boot, 12544 + 64 + 4, 4);
    writeFile(copy.boot, boot);
    CHECK_THROWS_WITH(inspectText(copy.boot, ""), Contains("nid 136 (\"/sync_io.rs\"): chunk 0") && Contains("disagrees with the chunk info table"));
    // The chunk table entry of ci 1 moved along: now the ci entry disagrees.
    put<uint64_t>(boot, 16384 + 56, 0x4000);
    writeFile(copy.boot, boot);
    CHECK_THROWS_WITH(inspectText(copy.boot, ""), Contains("chunk table entry for blob " + kBlob22Id + " ci 1"));
}

TEST_CASE("unpack writes raw blobs for the kernel and a pax tar", "[inspect]") {
    RAFS_REQUIRE_FIXTURES();
    TempDir out;
    build::unpack(build::UnpackOptions{kBoot22, kFixtureDir, out / "raw", out / "image.tar"});
    const std::vector<uint8_t> blob = readFile(kBlob22);
    const std::string lib = decompressed(blob, 0, 4828, 16931);
    const std::string sync = decompressed(blob, 4828, 2974, 13400);

    const std::vector<uint8_t> raw = readFile(out / ("raw/" + kBlob22Id));
    REQUIRE(raw.size() == 36864);
    CHECK(std::string(raw.begin(), raw.begin() + 16931) == lib);
    CHECK(std::all_of(raw.begin() + 16931, raw.begin() + 20480, [](uint8_t b) { return b == 0; }));
    CHECK(std::string(raw.begin() + 20480, raw.begin() + 20480 + 13400) == sync);
    CHECK(std::all_of(raw.begin() + 33880, raw.end(), [](uint8_t b) { return b == 0; }));

    const auto entries = readTar(out / "image.tar");
    REQUIRE(entries.size() == 2);
    const TarEntry& l = entries.at("lib.rs");
    CHECK((l.type == "file" && l.mode == 0644 && l.size == 16931));
    CHECK((l.mtime == 1676819553 && l.mtime_nsec == 628661334));
    CHECK(l.data == lib);
    CHECK(entries.at("sync_io.rs").data == sync);
    // Nothing but the outputs: no temporaries left behind.
    size_t files = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(out.path())) files += e.is_regular_file();
    CHECK(files == 2);

    // The inline-meta blob unpacks from itself.
    build::unpack(build::UnpackOptions{kInlineBlob, "", out / "raw2", out / "inline.tar"});
    CHECK(std::filesystem::file_size(out / ("raw2/" + kInlineBlobId)) == 12288);
    CHECK(readTar(out / "inline.tar").at("logger.rs").data.size() == 3115);
}

TEST_CASE("unpack exports every entry type, xattrs and hardlinks", "[inspect]") {
    TempDir dir;
    writeFile(dir / "synthetic.boot", SyntheticImage().bytes);
    build::unpack(build::UnpackOptions{dir / "synthetic.boot", "", "", dir / "out.tar"});
    const auto entries = readTar(dir / "out.tar");
    CHECK(entries.size() == 8);  // no root, no socket
    CHECK(!entries.count("sock"));
    const TarEntry& acl = entries.at("acl");
    CHECK((acl.type == "file" && acl.mode == 0640 && acl.data == "hello\n" && acl.mtime == 1600000000));
    CHECK(acl.xattrs.at("user.comment") == "x");
    CHECK(acl.xattrs.at("security.selinux") == "system_u:object_r:etc_t:s0");
    CHECK(acl.xattrs.at("system.posix_acl_access") == SyntheticImage::kAclValue);
    CHECK((entries.at("hard").type == "hardlink" && entries.at("hard").target == "acl"));
    CHECK((entries.at("link").type == "link" && entries.at("link").target == "acl"));
    const TarEntry& chr = entries.at("chr");
    CHECK((chr.type == "chr" && chr.major == 1 && chr.minor == 3));
    CHECK((chr.mtime == 1700000000 && chr.mtime_nsec == 123456789));
    CHECK((entries.at("blk").type == "blk" && entries.at("blk").major == 8 && entries.at("blk").minor == 1));
    CHECK(entries.at("fifo").type == "fifo");
    CHECK((entries.at("sub/").type == "dir" && entries.at("sub/").mode == 0700));
    CHECK((entries.at("sub/f").type == "file" && entries.at("sub/f").size == 0));
}

TEST_CASE("unpack leaves nothing behind on a bad chunk", "[inspect]") {
    RAFS_REQUIRE_FIXTURES();
    FixtureCopy copy;
    copy.patchBlob(5000, 0x10);  // inside chunk 1
    TempDir out;
    CHECK_THROWS_WITH(build::unpack(build::UnpackOptions{copy.boot, "", out / "raw", ""}),
                      Contains(kBlob22Id) && Contains("chunk"));
    CHECK_FALSE(std::filesystem::exists(out / "raw"));  // made by unpack, so taken away with the rest
    CHECK_THROWS_WITH(build::unpack(build::UnpackOptions{copy.boot, "", "", out / "image.tar"}), Contains(kBlob22Id));
    CHECK(std::filesystem::is_empty(out.path()));
    CHECK_THROWS_WITH(build::unpack(build::UnpackOptions{copy.boot, "", "", ""}), Contains("raw directory or a tar"));
}

TEST_CASE("random corruption of blobs never crashes inspect or unpack", "[inspect]") {
    RAFS_REQUIRE_FIXTURES();
    TempDir dir;
    const std::string boot = dir / "image.boot";
    writeFile(boot, readFile(kBoot22));
    std::mt19937 rng(11);
    for (const auto& [source, name] : {std::pair{kBlob22, kBlob22Id}, std::pair{kInlineBlob, kInlineBlobName}}) {
        const std::vector<uint8_t> good = readFile(source);
        const std::string target = source == kBlob22 ? boot : dir / name;
        for (int i = 0; i < 300; ++i) {
            std::vector<uint8_t> data = good;
            for (int f = 1 + static_cast<int>(rng() % 3); f > 0; --f) data[rng() % data.size()] = static_cast<uint8_t>(rng());
            writeFile(dir / name, data);
            // Any rafs::Error is fine (a few flips land in ignored bytes); other exceptions fail the test.
            try {
                inspectText(target, "");
            } catch (const Error&) {
            }
            try {
                build::unpack(build::UnpackOptions{target, "", dir / "raw", dir / "out.tar"});
            } catch (const Error&) {
            }
        }
    }
}

TEST_CASE("unpack keeps names that are not ASCII as bytes", "[inspect]") {
    SyntheticImage image;
    const std::string name = "\xff\xc3\xa9";  // an invalid UTF-8 byte, then "é"
    const uint64_t size = image.putDir(3, {{".", {SyntheticImage::kSubNid, erofs::kFtDirectory}},
                                           {"..", {SyntheticImage::kRootNid, erofs::kFtDirectory}},
                                           {name, {SyntheticImage::kFNid, erofs::kFtRegular}}});
    image.inode(SyntheticImage::kSubNid, S_IFDIR | 0700, size, erofs::kFlatPlain, 3, 2);
    TempDir dir;
    writeFile(dir / "synthetic.boot", image.bytes);
    build::unpack(build::UnpackOptions{dir / "synthetic.boot", "", "", dir / "out.tar"});
    CHECK(readTar(dir / "out.tar").count("sub/" + name) == 1);
}
