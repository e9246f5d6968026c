#include "daemon/core/FetchPlanner.h"

#include <catch2/catch.hpp>

#include <map>
#include <vector>

using rafs::BlobChunk;
using rafsd::ChunkState;
using rafsd::FetchPlanner;
using rafsd::FetchRun;

namespace {

constexpr uint64_t kKiB = 1024;

// `count` chunks of `size` uncompressed bytes (4 KiB-aligned offsets), each stored in half its
// size, back to back in the blob.
std::vector<BlobChunk> chunks(uint32_t count, uint32_t size) {
    std::vector<BlobChunk> out;
    uint64_t uncompressed = 0;
    uint64_t compressed = 0;
    for (uint32_t i = 0; i < count; ++i) {
        out.push_back({compressed, size / 2, uncompressed, size, true, false, 0});
        uncompressed += (size + 4095) / 4096 * 4096;
        compressed += size / 2;
    }
    return out;
}

// Chunk states for the planner: Missing unless set.
struct States {
    std::map<uint32_t, ChunkState> set;
    ChunkState operator()(uint32_t ci) const {
        const auto it = set.find(ci);
        return it == set.end() ? ChunkState::Missing : it->second;
    }
};

std::vector<uint32_t> chunksOf(const std::vector<FetchRun>& runs) {
    std::vector<uint32_t> out;
    for (const FetchRun& r : runs) {
        for (uint32_t ci = r.first; ci < r.first + r.count; ++ci) out.push_back(ci);
    }
    return out;
}

}  // namespace

TEST_CASE("a miss fetches the chunks read plus the window, merged into one range", "[planner]") {
    const auto c = chunks(64, 16 * kKiB);
    const FetchPlanner planner(64 * kKiB, 4 << 20);
    // An unaligned read inside chunk 2 that ends inside chunk 3.
    const auto plan = planner.plan(c, 2 * 16 * kKiB + 100, 16 * kKiB, States{});
    CHECK(plan.required == std::vector<uint32_t>{2, 3});
    // Chunks 2 and 3, read, are 32 KiB of the window; chunks 4 and 5 fill the rest.
    REQUIRE(plan.runs.size() == 1);
    CHECK(plan.runs[0].first == 2);
    CHECK(plan.runs[0].count == 4);
    CHECK(plan.runs[0].offset == c[2].compressed_offset);
    CHECK(plan.runs[0].length == 4 * 8 * kKiB);
}

TEST_CASE("a small read of a chunk as large as the window fetches that chunk alone", "[planner]") {
    const auto c = chunks(8, 1024 * kKiB);
    const FetchPlanner planner(1024 * kKiB, 4 << 20);
    const auto plan = planner.plan(c, 4096, 4096, States{});
    CHECK(plan.required == std::vector<uint32_t>{0});
    CHECK(chunksOf(plan.runs) == std::vector<uint32_t>{0});
    // A read across two chunks fetches both, and nothing more.
    const auto across = planner.plan(c, 3 * 1024 * kKiB - 4096, 8192, States{});
    CHECK(chunksOf(across.runs) == std::vector<uint32_t>{2, 3});
}

TEST_CASE("in-flight chunks are awaited, not fetched; the window stops at a present or in-flight chunk",
          "[planner]") {
    const auto c = chunks(64, 16 * kKiB);
    const FetchPlanner planner(1 << 20, 4 << 20);
    States s;
    s.set[1] = ChunkState::InFlight;
    s.set[4] = ChunkState::Present;
    const auto plan = planner.plan(c, 0, 2 * 16 * kKiB, s);
    CHECK(plan.required == std::vector<uint32_t>{0, 1});
    // 0 is fetched, 1 awaited; the window goes on with 2 and 3 and stops at present chunk 4.
    CHECK(chunksOf(plan.runs) == std::vector<uint32_t>{0, 2, 3});
    CHECK(plan.runs.size() == 2);

    s.set[2] = ChunkState::InFlight;
    s.set[3] = ChunkState::InFlight;
    const auto again = planner.plan(c, 0, 2 * 16 * kKiB, s);
    CHECK(chunksOf(again.runs) == std::vector<uint32_t>{0});  // the window stops at in-flight 2
}

TEST_CASE("a hit plans nothing", "[planner]") {
    const auto c = chunks(8, 16 * kKiB);
    const FetchPlanner planner(1 << 20, 4 << 20);
    States s;
    for (uint32_t i = 0; i < 8; ++i) s.set[i] = ChunkState::Present;
    const auto plan = planner.plan(c, 4096, 4096, s);
    CHECK(plan.required.empty());
    CHECK(plan.runs.empty());
}

TEST_CASE("runs split at the largest backend range and where stored bytes are not adjacent", "[planner]") {
    auto c = chunks(16, 64 * kKiB);
    c[5].compressed_offset += 1;  // a gap in the blob before chunk 5
    for (uint32_t i = 6; i < 16; ++i) c[i].compressed_offset += 1;
    const FetchPlanner planner(16 * 64 * kKiB, 3 * 32 * kKiB);  // 3 stored chunks per range
    const auto plan = planner.plan(c, 0, 4096, States{});
    std::vector<std::pair<uint32_t, uint32_t>> runs;
    for (const FetchRun& r : plan.runs) runs.emplace_back(r.first, r.count);
    CHECK(runs == std::vector<std::pair<uint32_t, uint32_t>>{{0, 3}, {3, 2}, {5, 3}, {8, 3}, {11, 3}, {14, 2}});
}

TEST_CASE("read-ahead only for a reader that reads on, once it is a window from the first missing chunk",
          "[planner]") {
    const auto c = chunks(64, 16 * kKiB);  // 1 MiB
    const FetchPlanner planner(128 * kKiB, 4 << 20);  // 8 chunks per window
    States s;

    SECTION("nothing at the start of the blob or after a missing block: a random reader") {
        CHECK(planner.ahead(c, 0, s).empty());
        CHECK(planner.ahead(c, 20 * 16 * kKiB, s).empty());
    }
    SECTION("reading on: the missing chunks of two windows from the reader") {
        for (uint32_t i = 0; i < 10; ++i) s.set[i] = ChunkState::Present;
        s.set[10] = ChunkState::InFlight;
        // At chunk 9 (present): chunk 17 starts one window on, and is missing.
        const auto runs = planner.ahead(c, 9 * 16 * kKiB, s);
        std::vector<uint32_t> expected;
        for (uint32_t i = 11; i < 25; ++i) expected.push_back(i);
        CHECK(chunksOf(runs) == expected);
        // In-flight chunk 10 splits nothing: 11..24 are one range.
        CHECK(runs.size() == 1);
    }
    SECTION("nothing while the window ahead is on its way") {
        for (uint32_t i = 0; i < 10; ++i) s.set[i] = ChunkState::Present;
        for (uint32_t i = 10; i < 25; ++i) s.set[i] = ChunkState::InFlight;
        CHECK(planner.ahead(c, 9 * 16 * kKiB, s).empty());
        CHECK(planner.ahead(c, 16 * 16 * kKiB, s).empty());  // chunk 24 in flight
        // The reader reached chunk 17: chunk 25 is missing, the next window goes out.
        const auto next = planner.ahead(c, 17 * 16 * kKiB, s);
        std::vector<uint32_t> expected;
        for (uint32_t i = 25; i < 33; ++i) expected.push_back(i);
        CHECK(chunksOf(next) == expected);
    }
    SECTION("nothing near the end of the blob or with amplification off") {
        for (uint32_t i = 0; i < 60; ++i) s.set[i] = ChunkState::Present;
        CHECK(planner.ahead(c, 60 * 16 * kKiB, s).empty());  // one window on is past the end
        const FetchPlanner off(0, 4 << 20);
        CHECK(off.ahead(c, 20 * 16 * kKiB, s).empty());
    }
}
