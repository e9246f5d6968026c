#include "daemon/core/ReadinessBitmap.h"

#include "format/Error.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>
#include <stdlib.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using rafsd::ReadinessBitmap;
using Catch::Matchers::Contains;

namespace {

const std::string kBlob(64, 'a');
const std::string kOtherBlob(64, 'b');
constexpr uint64_t kHeaderSize = 128;

using rafs::test::TempDir;

std::vector<uint8_t> readFile(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void writeFile(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Recomputes the header checksum after a test changed header fields, so that only the change
// under test can make the file unusable.
void resealHeader(std::vector<uint8_t>& bytes) {
    const auto crc = static_cast<uint32_t>(crc32(0, bytes.data(), 124));
    std::memcpy(bytes.data() + 124, &crc, sizeof crc);
}

// Creates a bitmap with a few bits set, lets `damage` edit its bytes, and reopens it.
ReadinessBitmap reopenDamaged(const std::filesystem::path& path,
                              const std::function<void(std::vector<uint8_t>&)>& damage) {
    {
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 20, 1 << 20);
        bitmap.set(1);
        bitmap.set(19);
    }
    std::vector<uint8_t> bytes = readFile(path);
    damage(bytes);
    writeFile(path, bytes);
    return ReadinessBitmap::open(path, kBlob, 20, 1 << 20);
}

}  // namespace

TEST_CASE("a new bitmap is empty and persists its bits across reopen", "[cache]") {
    TempDir dir;
    const auto path = dir / (kBlob + ".chunkmap");
    {
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 20, 5 << 20);
        CHECK_FALSE(bitmap.discarded());
        CHECK(bitmap.count() == 0);
        CHECK_FALSE(bitmap.complete());
        bitmap.set(0);
        bitmap.set(9);
        bitmap.set(9);  // setting twice counts once
        bitmap.set(19);
        CHECK(bitmap.count() == 3);
        bitmap.flush();
    }
    CHECK(std::filesystem::file_size(path) == kHeaderSize + 3);
    ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 20, 5 << 20);
    CHECK_FALSE(bitmap.discarded());
    CHECK(bitmap.count() == 3);
    for (uint32_t chunk = 0; chunk < 20; ++chunk)
        CHECK(bitmap.test(chunk) == (chunk == 0 || chunk == 9 || chunk == 19));
    for (uint32_t chunk = 0; chunk < 20; ++chunk) bitmap.set(chunk);
    CHECK(bitmap.complete());
}

TEST_CASE("a bitmap without chunks is complete", "[cache]") {
    TempDir dir;
    ReadinessBitmap bitmap = ReadinessBitmap::open(dir / "empty", kBlob, 0, 0);
    CHECK(bitmap.complete());
    CHECK_THROWS_AS(bitmap.test(0), rafs::Error);
}

TEST_CASE("a bitmap that does not match is discarded, never read", "[cache]") {
    TempDir dir;
    const auto path = dir / "map";

    SECTION("another blob") {
        { ReadinessBitmap::open(path, kOtherBlob, 20, 1 << 20).set(3); }
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 20, 1 << 20);
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains(kOtherBlob));
        CHECK(bitmap.count() == 0);
    }
    SECTION("another chunk count") {
        { ReadinessBitmap::open(path, kBlob, 21, 1 << 20).set(3); }
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 20, 1 << 20);
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("chunk count 21"));
        CHECK(bitmap.count() == 0);
    }
    SECTION("another blob size") {
        { ReadinessBitmap::open(path, kBlob, 20, 2 << 20).set(3); }
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 20, 1 << 20);
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("blob size"));
        CHECK(bitmap.count() == 0);
    }
    SECTION("another chunk table under the same blob id") {
        // Another image naming this blob with other chunk digests: what they vouched for is not
        // this image's data.
        rafs::Digest other{};
        other[0] = 1;
        { ReadinessBitmap::open(path, kBlob, 20, 1 << 20, other).set(3); }
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 20, 1 << 20);
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("another chunk table"));
        CHECK(bitmap.count() == 0);
    }
    SECTION("another format version") {
        ReadinessBitmap bitmap = reopenDamaged(path, [](std::vector<uint8_t>& bytes) {
            const uint32_t version = ReadinessBitmap::kFormatVersion + 1;
            std::memcpy(bytes.data() + 8, &version, sizeof version);
            resealHeader(bytes);
        });
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("format version 3"));
        CHECK(bitmap.count() == 0);
    }
    SECTION("a corrupted header") {
        ReadinessBitmap bitmap =
            reopenDamaged(path, [](std::vector<uint8_t>& bytes) { bytes[40] ^= 0x01; });
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("checksum"));
        CHECK(bitmap.count() == 0);
    }
    SECTION("a bad magic") {
        ReadinessBitmap bitmap =
            reopenDamaged(path, [](std::vector<uint8_t>& bytes) { bytes[0] = 'X'; });
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("magic"));
    }
    SECTION("a file that is too long") {
        ReadinessBitmap bitmap =
            reopenDamaged(path, [](std::vector<uint8_t>& bytes) { bytes.push_back(0xff); });
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("length"));
        CHECK(bitmap.count() == 0);
    }
    SECTION("a file cut short") {
        ReadinessBitmap bitmap =
            reopenDamaged(path, [](std::vector<uint8_t>& bytes) { bytes.pop_back(); });
        CHECK(bitmap.discarded());
        CHECK(bitmap.count() == 0);
    }
    SECTION("a file without a whole header") {
        ReadinessBitmap bitmap =
            reopenDamaged(path, [](std::vector<uint8_t>& bytes) { bytes.resize(50); });
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("header"));
    }
    SECTION("bits past the last chunk") {
        ReadinessBitmap bitmap =
            reopenDamaged(path, [](std::vector<uint8_t>& bytes) { bytes.back() |= 0x80; });
        CHECK(bitmap.discarded());
        CHECK_THAT(bitmap.discardReason(), Contains("past the last chunk"));
        CHECK(bitmap.count() == 0);
    }

    // The replacement is a valid, empty bitmap of the requested blob.
    ReadinessBitmap again = ReadinessBitmap::open(path, kBlob, 20, 1 << 20);
    CHECK_FALSE(again.discarded());
    CHECK(again.count() == 0);
    CHECK(std::filesystem::file_size(path) == kHeaderSize + 3);
}

TEST_CASE("a bitmap is locked while open, also against this process", "[cache]") {
    TempDir dir;
    const auto path = dir / "map";
    {
        ReadinessBitmap first = ReadinessBitmap::open(path, kBlob, 10, 1);
        first.set(2);
        CHECK_THROWS_WITH(ReadinessBitmap::open(path, kBlob, 10, 1), Contains("in use by another process"));
        // The refused open changed nothing.
        CHECK(first.test(2));
    }
    ReadinessBitmap again = ReadinessBitmap::open(path, kBlob, 10, 1);
    CHECK_FALSE(again.discarded());
    CHECK(again.test(2));
}

TEST_CASE("opening a bitmap waits for a holder that lets go", "[cache]") {
    TempDir dir;
    const auto path = dir / "map";
    auto held = std::make_unique<ReadinessBitmap>(ReadinessBitmap::open(path, kBlob, 10, 1));
    held->set(4);
    std::thread release([&held] {
        std::this_thread::sleep_for(ReadinessBitmap::kLockWait / 10);
        held.reset();
    });
    ReadinessBitmap next = ReadinessBitmap::open(path, kBlob, 10, 1);
    release.join();
    CHECK(next.test(4));
}

TEST_CASE("a bitmap refuses bad blob ids and chunk indexes", "[cache]") {
    TempDir dir;
    CHECK_THROWS_WITH(ReadinessBitmap::open(dir / "m", "abc", 1, 1), Contains("blob id"));
    CHECK_THROWS_AS(ReadinessBitmap::open(dir / "m", std::string(64, 'A'), 1, 1), rafs::Error);
    ReadinessBitmap bitmap = ReadinessBitmap::open(dir / "m", kBlob, 10, 1);
    CHECK_THROWS_WITH(bitmap.set(10), Contains("out of range"));
    CHECK_THROWS_AS(bitmap.test(10), rafs::Error);
}

TEST_CASE("set() from several threads keeps every bit, in memory and on disk", "[cache]") {
    TempDir dir;
    const auto path = dir / "map";
    constexpr uint32_t kChunks = 20'000;
    constexpr uint32_t kThreads = 8;
    {
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, kChunks, 1);
        std::vector<std::thread> threads;
        // Thread t sets chunks t, t + 8, ...: all threads write to every byte at once.
        for (uint32_t t = 0; t < kThreads; ++t)
            threads.emplace_back([&bitmap, t] {
                for (uint32_t chunk = t; chunk < kChunks; chunk += kThreads) bitmap.set(chunk);
            });
        for (auto& thread : threads) thread.join();
        CHECK(bitmap.count() == kChunks);
        CHECK(bitmap.complete());
    }
    ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, kChunks, 1);
    CHECK_FALSE(bitmap.discarded());
    CHECK(bitmap.count() == kChunks);
    CHECK(bitmap.complete());
}

TEST_CASE("setRange() sets and persists a range that spans many bytes, with ranges set alongside", "[cache]") {
    TempDir dir;
    const auto path = dir / "map";
    constexpr uint32_t kChunks = 2'000;
    {
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, kChunks, 1);
        bitmap.set(3);
        bitmap.setRange(5, 1'000);  // unaligned at both ends, more bytes than fit on the stack
        bitmap.setRange(1'005, 2);  // shares a byte with the previous range
        bitmap.setRange(0, 0);
        CHECK(bitmap.count() == 1'003);
        CHECK_THROWS_WITH(bitmap.setRange(1'999, 2), Contains("out of range"));
        CHECK_THROWS_WITH(bitmap.setRange(UINT32_MAX, 2), Contains("out of range"));
        CHECK(bitmap.count() == 1'003);
    }
    ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, kChunks, 1);
    CHECK_FALSE(bitmap.discarded());
    CHECK(bitmap.count() == 1'003);
    for (uint32_t chunk = 0; chunk < kChunks; ++chunk) {
        INFO("chunk " << chunk);
        CHECK(bitmap.test(chunk) == (chunk == 3 || (chunk >= 5 && chunk < 1'007)));
    }
}

TEST_CASE("clearIf() drops bits and persists the result", "[cache]") {
    TempDir dir;
    const auto path = dir / "map";
    {
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 100, 1);
        for (uint32_t chunk = 0; chunk < 100; chunk += 3) bitmap.set(chunk);
        std::vector<uint32_t> asked;
        const uint32_t cleared = bitmap.clearIf([&](uint32_t chunk) {
            asked.push_back(chunk);
            return chunk % 2 == 0;
        });
        CHECK(asked.size() == 34);  // only set bits are offered
        CHECK(cleared == 17);
        CHECK(bitmap.count() == 17);
        CHECK_FALSE(bitmap.test(0));
        CHECK(bitmap.test(3));
    }
    ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 100, 1);
    CHECK(bitmap.count() == 17);
    for (uint32_t chunk = 0; chunk < 100; ++chunk)
        CHECK(bitmap.test(chunk) == (chunk % 3 == 0 && chunk % 2 == 1));
}

TEST_CASE("clearRange() clears and persists a range, counting only the bits that were set", "[cache]") {
    TempDir dir;
    const auto path = dir / "map";
    {
        ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 100, 1);
        bitmap.setRange(10, 50);
        CHECK(bitmap.clearRange(5, 10) == 5);  // 10..14 were set, 5..9 were not
        CHECK(bitmap.clearRange(40, 0) == 0);
        CHECK(bitmap.clearRange(40, 30) == 20);
        CHECK_THROWS_WITH(bitmap.clearRange(99, 2), Contains("out of range"));
        CHECK(bitmap.count() == 25);
    }
    ReadinessBitmap bitmap = ReadinessBitmap::open(path, kBlob, 100, 1);
    CHECK(bitmap.count() == 25);
    for (uint32_t chunk = 0; chunk < 100; ++chunk) CHECK(bitmap.test(chunk) == (chunk >= 15 && chunk < 40));
}
