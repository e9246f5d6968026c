#include "daemon/core/BlobCache.h"
#include "daemon/core/SparseCacheFile.h"

#include "format/Error.h"
#include "tests/unit/CacheDir.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

using rafsd::BlobCache;
using rafsd::ChunkExtent;
using rafsd::ChunkRange;
using rafsd::ReadinessBitmap;
using rafsd::SparseCacheFile;
using Catch::Matchers::Contains;
using rafs::test::CacheDir;

namespace rafsd {
std::ostream& operator<<(std::ostream& out, const ChunkRange& range) {
    return out << '[' << range.begin << ", " << range.end << ')';
}
}  // namespace rafsd

namespace {

constexpr uint64_t kBlock = 4096;
const std::string kBlob(64, 'c');

struct AlignedDelete {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{kBlock}); }
};
using AlignedBuffer = std::unique_ptr<uint8_t[], AlignedDelete>;

// `size` bytes, block-aligned, filled with `value`.
AlignedBuffer alignedFilled(size_t size, uint8_t value) {
    AlignedBuffer buffer(new (std::align_val_t{kBlock}) uint8_t[size]);
    std::memset(buffer.get(), value, size);
    return buffer;
}

std::vector<uint8_t> readAt(const std::filesystem::path& path, uint64_t offset, size_t length) {
    std::vector<uint8_t> out(length);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const ssize_t n = ::pread(fd, out.data(), length, static_cast<off_t>(offset));
    ::close(fd);
    REQUIRE(n == static_cast<ssize_t>(length));
    return out;
}

// Chunk i holds bytes of value i + 1; sizes deliberately not block multiples.
std::vector<uint8_t> chunkData(uint32_t index, uint32_t size) {
    return std::vector<uint8_t>(size, static_cast<uint8_t>(index + 1));
}

// Four chunks: [0, 5000) [8192, 8193) [12288, 12288+8192) [24576, 24576+100), blob size 24676.
const std::vector<ChunkExtent> kGeometry = {{0, 5000}, {8192, 1}, {12288, 8192}, {24576, 100}};
constexpr uint64_t kBlobSize = 24676;

struct OpenedCache {
    std::unique_ptr<BlobCache> cache;
    bool bitmap_discarded = false;
};

OpenedCache openCache(const CacheDir& dir, std::vector<ChunkExtent> geometry = kGeometry,
                      uint64_t blob_size = kBlobSize) {
    auto file = SparseCacheFile::open(dir / kBlob, blob_size);
    auto bitmap = ReadinessBitmap::open(dir / (kBlob + ".chunkmap"), kBlob,
                                        static_cast<uint32_t>(geometry.size()), blob_size);
    const bool discarded = bitmap.discarded();
    return {std::make_unique<BlobCache>(std::move(file), std::move(bitmap), std::move(geometry)),
            discarded};
}

}  // namespace

TEST_CASE("SparseCacheFile refuses tmpfs", "[cache]") {
    // Catch2 v2 has no SKIP: warn and pass.
    if (::geteuid() != 0) {
        WARN("skipped: mounting a tmpfs needs root");
        return;
    }
    CacheDir dir;
    const std::filesystem::path mount_point = dir / "tmpfs";
    std::filesystem::create_directory(mount_point);
    if (::mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=1m") != 0) {
        WARN("skipped: cannot mount a tmpfs here: " << std::strerror(errno));
        return;
    }
    struct Unmount {
        std::filesystem::path at;
        ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
    } unmount{mount_point};

    CHECK_THROWS_WITH(SparseCacheFile::open(mount_point / kBlob, 1 << 20),
                      Contains("is on tmpfs") && Contains("ext4, xfs or btrfs"));
    CHECK_FALSE(std::filesystem::exists(mount_point / kBlob));  // nothing left behind
}

TEST_CASE("SparseCacheFile creates a sparse file of the rounded size and reuses it", "[cache]") {
    CacheDir dir;
    const auto path = dir / kBlob;
    {
        auto file = SparseCacheFile::open(path, 10'000);
        CHECK(file->size() == 10'000);
        CHECK(file->path() == path);
        CHECK(file->fd() >= 0);
        CHECK(std::filesystem::file_size(path) == 12'288);
        CHECK_FALSE(file->hasData(0, 4096));
        auto block = alignedFilled(kBlock, 0x5a);
        file->write(4096, {block.get(), kBlock});
        file->sync();
    }
    SECTION("same size: content kept") {
        auto file = SparseCacheFile::open(path, 10'000);
        CHECK(file->hasData(4096, 4096));
        CHECK(readAt(path, 4096, 1)[0] == 0x5a);
    }
    SECTION("other size: content dropped") {
        auto file = SparseCacheFile::open(path, 20'000);
        CHECK(std::filesystem::file_size(path) == 20'480);
        CHECK_FALSE(file->hasData(4096, 4096));
        CHECK(readAt(path, 4096, 1)[0] == 0);
    }
}

TEST_CASE("SparseCacheFile enforces the write alignment contract", "[cache]") {
    CacheDir dir;
    auto file = SparseCacheFile::open(dir / kBlob, 3 * kBlock + 10);  // spans 4 blocks
    auto buffer = alignedFilled(5 * kBlock, 1);

    CHECK_THROWS_WITH(file->write(100, {buffer.get(), kBlock}), Contains("aligned"));
    CHECK_THROWS_WITH(file->write(0, {buffer.get(), 100}), Contains("aligned"));
    CHECK_THROWS_WITH(file->write(0, {buffer.get() + 1, kBlock}), Contains("aligned"));
    CHECK_THROWS_WITH(file->write(4 * kBlock, {buffer.get(), kBlock}), Contains("past the cache file's end"));
    CHECK_THROWS_WITH(file->write(0, {buffer.get(), 5 * kBlock}), Contains("past the cache file's end"));
    CHECK_FALSE(file->hasData(0, 4 * kBlock));

    // The last write may end at size() rounded up to a block.
    file->write(3 * kBlock, {buffer.get(), kBlock});
    CHECK(file->hasData(3 * kBlock, kBlock));
}

TEST_CASE("SparseCacheFile writes land where hasData sees them", "[cache]") {
    CacheDir dir;
    const auto path = dir / kBlob;
    auto file = SparseCacheFile::open(path, 16 * kBlock);
    auto data = alignedFilled(2 * kBlock, 0x77);
    file->write(4 * kBlock, {data.get(), 2 * kBlock});

    CHECK(file->hasData(4 * kBlock, 2 * kBlock));
    CHECK(file->hasData(4 * kBlock + 10, 100));
    CHECK_FALSE(file->hasData(3 * kBlock, kBlock));
    CHECK_FALSE(file->hasData(4 * kBlock, 3 * kBlock));  // runs into a hole
    CHECK_FALSE(file->hasData(16 * kBlock, kBlock));      // past the end
    CHECK(file->hasData(0, 0));
    CHECK(readAt(path, 4 * kBlock, 2 * kBlock) == std::vector<uint8_t>(2 * kBlock, 0x77));
    CHECK(readAt(path, 6 * kBlock, kBlock) == std::vector<uint8_t>(kBlock, 0));
}

TEST_CASE("SparseCacheFile handles a 5 GiB blob sparsely", "[cache]") {
    CacheDir dir;
    const auto path = dir / kBlob;
    const uint64_t size = (uint64_t{5} << 30) + 123;
    const uint64_t end = ((uint64_t{5} << 30) / kBlock + 1) * kBlock;
    auto file = SparseCacheFile::open(path, size);
    CHECK(std::filesystem::file_size(path) == end);

    auto block = alignedFilled(kBlock, 0xee);
    file->write(end - kBlock, {block.get(), kBlock});
    file->write(uint64_t{4} << 30, {block.get(), kBlock});  // past 2^32
    file->sync();
    CHECK(file->hasData(end - kBlock, kBlock));
    CHECK(file->hasData(uint64_t{4} << 30, kBlock));
    CHECK_FALSE(file->hasData(uint64_t{3} << 30, kBlock));
    CHECK(readAt(path, end - kBlock, kBlock) == std::vector<uint8_t>(kBlock, 0xee));

    struct stat info {};
    REQUIRE(::stat(path.c_str(), &info) == 0);
    CHECK(info.st_blocks * 512 < 1 << 20);  // two blocks written, not 5 GiB
}

TEST_CASE("BlobCache finds the chunks covering a byte range", "[cache]") {
    CacheDir dir;
    auto cache = openCache(dir).cache;
    CHECK(cache->chunkCount() == 4);
    CHECK(cache->chunk(2).offset == 12288);
    CHECK_THROWS_WITH(cache->chunk(4), Contains("out of range"));
    CHECK(cache->chunksCovering(0, 1) == ChunkRange{0, 1});
    CHECK(cache->chunksCovering(0, kBlobSize) == ChunkRange{0, 4});
    CHECK(cache->chunksCovering(4999, 2) == ChunkRange{0, 1});
    CHECK(cache->chunksCovering(6000, 100) == ChunkRange{0, 1});      // chunk 0's zero padding
    CHECK(cache->chunksCovering(8191, 2) == ChunkRange{0, 2});
    CHECK(cache->chunksCovering(8192, 4096) == ChunkRange{1, 2});
    CHECK(cache->chunksCovering(12288, 1) == ChunkRange{2, 3});
    CHECK(cache->chunksCovering(16384, 4096) == ChunkRange{2, 3});
    CHECK(cache->chunksCovering(16384, 8193) == ChunkRange{2, 4});
    CHECK(cache->chunksCovering(20480, 4096) == ChunkRange{3, 3});    // gap between chunks
    CHECK(cache->chunksCovering(28672, 4096).empty());                // past the last chunk
    CHECK(cache->chunksCovering(10'000, 0).empty());
    CHECK(cache->chunksCovering(4096, UINT64_MAX) == ChunkRange{0, 4});  // no overflow
}

TEST_CASE("BlobCache writes chunks zero-padded and remembers them across reopen", "[cache]") {
    CacheDir dir;
    {
        auto [cache, discarded] = openCache(dir);
        CHECK_FALSE(discarded);
        CHECK(cache->droppedAtOpen() == 0);
        CHECK_FALSE(cache->isPresent(0));
        cache->write(0, chunkData(0, 5000));
        cache->write(2, chunkData(2, 8192));
        CHECK(cache->isPresent(0));
        CHECK_FALSE(cache->isPresent(1));
        CHECK(cache->isPresent(2));
        CHECK_FALSE(cache->complete());
        cache->flush();
    }
    const auto path = dir / kBlob;
    std::vector<uint8_t> expected(8192, 0);
    std::fill_n(expected.begin(), 5000, uint8_t{1});
    CHECK(readAt(path, 0, 8192) == expected);
    CHECK(readAt(path, 12288, 8192) == std::vector<uint8_t>(8192, 3));

    auto [cache, discarded] = openCache(dir);
    CHECK_FALSE(discarded);
    CHECK(cache->droppedAtOpen() == 0);
    CHECK(cache->isPresent(0));
    CHECK(cache->isPresent(2));
    CHECK(cache->bitmap().count() == 2);
    cache->write(1, chunkData(1, 1));
    cache->write(3, chunkData(3, 100));
    CHECK(cache->complete());
    CHECK(readAt(path, 24576, 4096)[99] == 4);
    CHECK(readAt(path, 24576, 4096)[100] == 0);
}

TEST_CASE("BlobCache writes an aligned, block-sized chunk as it is", "[cache]") {
    CacheDir dir;
    auto cache = openCache(dir, {{0, 8192}}, 8192).cache;
    auto data = alignedFilled(8192, 9);
    cache->write(0, {data.get(), 8192});
    CHECK(cache->complete());
    CHECK(readAt(dir / kBlob, 0, 8192) == std::vector<uint8_t>(8192, 9));
}

TEST_CASE("BlobCache writes back-to-back extents at once and remembers them", "[cache]") {
    CacheDir dir;
    {
        auto cache = openCache(dir).cache;
        // Chunks 0 to 2 lie back to back in [0, 20480); chunk 3 starts after a gap.
        auto extents = alignedFilled(20480, 7);
        CHECK_THROWS_WITH(cache->writeExtents(1, 3, {extents.get(), 20480}), Contains("not back to back"));
        CHECK_THROWS_WITH(cache->writeExtents(0, 3, {extents.get(), 16384}), Contains("span 20480 bytes, got 16384"));
        CHECK_THROWS_WITH(cache->writeExtents(3, 2, {extents.get(), 4096}), Contains("out of range"));
        CHECK(cache->bitmap().count() == 0);
        cache->writeExtents(0, 3, {extents.get(), 20480});
        CHECK(cache->isPresent(0));
        CHECK(cache->isPresent(1));
        CHECK(cache->isPresent(2));
        CHECK_FALSE(cache->isPresent(3));
        cache->flush();
    }
    CHECK(readAt(dir / kBlob, 0, 20480) == std::vector<uint8_t>(20480, 7));
    auto [cache, discarded] = openCache(dir);
    CHECK_FALSE(discarded);
    CHECK(cache->bitmap().count() == 3);
    CHECK_FALSE(cache->isPresent(3));
}

TEST_CASE("BlobCache refuses wrong chunk data and geometry", "[cache]") {
    CacheDir dir;
    {
        auto cache = openCache(dir).cache;
        CHECK_THROWS_WITH(cache->write(0, chunkData(0, 4999)), Contains("expected 5000"));
        CHECK_THROWS_WITH(cache->write(4, chunkData(0, 1)), Contains("out of range"));
        CHECK_FALSE(cache->isPresent(0));
    }
    CHECK_THROWS_WITH(openCache(dir, {{0, 5000}, {4096, 10}}), Contains("overlaps"));
    CHECK_THROWS_WITH(openCache(dir, {{100, 10}}), Contains("4 KiB boundary"));
    CHECK_THROWS_WITH(openCache(dir, {{0, 10}, {28672, 10}}), Contains("past the cache file's end"));
    CHECK_THROWS_WITH(openCache(dir, {{0, 0}}), Contains("empty"));

    auto file = SparseCacheFile::open(dir / kBlob, kBlobSize);
    auto bitmap = ReadinessBitmap::open(dir / "other.chunkmap", kBlob, 3, kBlobSize);
    CHECK_THROWS_WITH(BlobCache(std::move(file), std::move(bitmap), kGeometry), Contains("4 chunks"));
}

TEST_CASE("BlobCache validation clears bits over holes", "[cache]") {
    CacheDir dir;
    {
        auto [cache, discarded] = openCache(dir);
        for (uint32_t chunk = 0; chunk < 4; ++chunk)
            cache->write(chunk, chunkData(chunk, kGeometry[chunk].size));
        CHECK(cache->complete());
    }

    SECTION("data lost after the bit was set") {
        // Punch out the second block of chunk 2, as if that write never reached the disk.
        const int fd = ::open((dir / kBlob).c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(fd >= 0);
        REQUIRE(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 16384, 4096) == 0);
        ::close(fd);
        {
            auto [cache, discarded] = openCache(dir);
            CHECK(cache->droppedAtOpen() == 1);
            CHECK(cache->isPresent(0));
            CHECK(cache->isPresent(1));
            CHECK_FALSE(cache->isPresent(2));
            CHECK(cache->isPresent(3));
            CHECK(cache->bitmap().count() == 3);
        }
        // The cleared bit is persisted too.
        auto reopened = openCache(dir).cache;
        CHECK(reopened->droppedAtOpen() == 0);
        CHECK_FALSE(reopened->isPresent(2));
    }
    SECTION("cache file recreated") {
        std::filesystem::remove(dir / kBlob);
        auto [cache, discarded] = openCache(dir);
        CHECK_FALSE(discarded);
        CHECK(cache->droppedAtOpen() == 4);
        CHECK(cache->bitmap().count() == 0);
    }
    SECTION("bits set without data") {
        auto [cache, discarded] = openCache(dir, kGeometry);
        CHECK(cache->droppedAtOpen() == 0);
        std::filesystem::resize_file(dir / kBlob, 0);
        std::filesystem::resize_file(dir / kBlob, 28672);
        CHECK(cache->validate() == 4);
        cache->markPresent(1);
        CHECK(cache->validate() == 1);
    }
}

TEST_CASE("BlobCache takes chunk writes from several threads", "[cache]") {
    CacheDir dir;
    constexpr uint32_t kChunks = 256;
    std::vector<ChunkExtent> geometry;
    for (uint32_t i = 0; i < kChunks; ++i) geometry.push_back({uint64_t{i} * 2 * kBlock, 5000});
    const uint64_t blob_size = uint64_t{kChunks} * 2 * kBlock;
    auto cache = openCache(dir, geometry, blob_size).cache;

    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < 4; ++t)
        threads.emplace_back([&cache, t] {
            for (uint32_t chunk = t; chunk < kChunks; chunk += 4) cache->write(chunk, chunkData(chunk, 5000));
        });
    for (auto& thread : threads) thread.join();
    cache->flush();
    CHECK(cache->complete());
    for (uint32_t chunk = 0; chunk < kChunks; chunk += 37) {
        const auto bytes = readAt(dir / kBlob, uint64_t{chunk} * 2 * kBlock, 2 * kBlock);
        CHECK(bytes[4999] == static_cast<uint8_t>(chunk + 1));
        CHECK(bytes[5000] == 0);
    }
}

TEST_CASE("BlobCache::discard clears the bits, then punches the chunks' extents", "[cache]") {
    CacheDir dir;
    auto [cache, discarded] = openCache(dir);
    for (uint32_t i = 0; i < kGeometry.size(); ++i) cache->write(i, chunkData(i, kGeometry[i].size));
    REQUIRE(cache->complete());
    REQUIRE(cache->file().canDiscard());
    // Chunks 1 and 2: [8192, 8193) and [12288, 20480), 4 KiB-rounded extents back to back.
    CHECK(cache->discard(1, 2) == 4096 + 8192);
    CHECK(cache->isPresent(0));
    CHECK_FALSE(cache->isPresent(1));
    CHECK_FALSE(cache->isPresent(2));
    CHECK(cache->isPresent(3));
    CHECK(cache->file().hasData(0, 4096));
    CHECK_FALSE(cache->file().hasData(8192, 4096));
    CHECK_FALSE(cache->file().hasData(12288, 8192));
    CHECK(cache->file().hasData(24576, 4096));
    CHECK(readAt(dir / kBlob, 12288, 8192) == std::vector<uint8_t>(8192, 0));
    CHECK(readAt(dir / kBlob, 24576, 100) == chunkData(3, 100));
    // Written again, they are back.
    cache->write(2, chunkData(2, 8192));
    CHECK(cache->isPresent(2));
    CHECK(readAt(dir / kBlob, 12288, 8192) == chunkData(2, 8192));
    CHECK(cache->discard(0, 0) == 0);
    CHECK_THROWS_WITH(cache->discard(3, 2), Contains("out of range"));
}
