// What Blake3.cpp shares with its SIMD kernels, which live in translation units of their own,
// each compiled for its instruction set (format/meson.build). Only plain data, constants and
// functions of internal linkage here: an inline function that a kernel's unit emits could be the
// copy the linker keeps for every caller, and run AVX-512 code on a CPU without it.
#pragma once

#include "format/Blake3.h"

#include <cstddef>
#include <cstdint>

namespace rafs::blake3 {

inline constexpr uint32_t kIv[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                                    0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

inline constexpr uint32_t kChunkStart = 1;
inline constexpr uint32_t kChunkEnd = 2;
inline constexpr uint32_t kParent = 4;
inline constexpr uint32_t kRoot = 8;

inline constexpr size_t kBlockLen = Blake3::kBlockLen;
inline constexpr size_t kChunkLen = Blake3::kChunkLen;
inline constexpr size_t kCvLen = 32;
inline constexpr size_t kRounds = 7;

// order[r][i] is the message word that round r uses in position i: each round reads the previous
// round's order through the specification's fixed permutation.
struct MessageSchedule {
    uint8_t order[kRounds][16];
};

inline constexpr MessageSchedule kSchedule = [] {
    constexpr uint8_t permutation[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
    MessageSchedule s{};
    for (size_t i = 0; i < 16; ++i) s.order[0][i] = static_cast<uint8_t>(i);
    for (size_t r = 1; r < kRounds; ++r) {
        for (size_t i = 0; i < 16; ++i) s.order[r][i] = s.order[r - 1][permutation[i]];
    }
    return s;
}();

// Inputs of equal length (whole chunks, or parent nodes of one block) laid back to back, each
// hashed to a chaining value.
struct Batch {
    const uint8_t* in;
    size_t blocks;          // per input
    uint64_t counter;       // of the first input
    bool incrementCounter;  // chunks count up; parent nodes all use 0
    uint32_t flags;         // on every block
    uint32_t flagsStart;    // added on each input's first block
    uint32_t flagsEnd;      // and on its last
    uint8_t* out;           // 32 bytes per input; may be `in` itself (see Blake3::hashSubtree)
};

namespace {

[[maybe_unused]] uint32_t blockFlags(const Batch& b, size_t block) {
    return b.flags | (block == 0 ? b.flagsStart : 0) | (block + 1 == b.blocks ? b.flagsEnd : 0);
}

[[maybe_unused]] uint64_t counterOf(const Batch& b, size_t input) {
    return b.counter + (b.incrementCounter ? input : 0);
}

}  // namespace

// Four or eight inputs at once, each in a lane (Blake3Lanes.h). hash8Avx512 is the 8-lane kernel
// with AVX-512VL's rotate instruction, faster than AVX2's shifts and byte shuffles
// (docs/benchmarks.md).
void hash4Sse41(const Batch& b);
void hash8Avx2(const Batch& b);
void hash8Avx512(const Batch& b);

}  // namespace rafs::blake3
