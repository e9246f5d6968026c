// The SIMD BLAKE3 kernel, one input per 32-bit lane of a vector: v[i] holds state word i of every
// input, so the round function is the portable one applied to whole vectors. Written once over a
// `Lanes` policy (the vector type, its width and its operations) and included only by translation
// units compiled for that instruction set (Blake3Sse41.cpp, Blake3Avx2.cpp, Blake3Avx512.cpp);
// everything here has internal linkage (see Blake3Kernels.h).
//
// A Lanes policy is VectorLanes<its vector type> (below) plus rotr16, rotr12, rotr8 and rotr7, and
// transpose(Vec*), which turns kLanes rows into kLanes columns.
//
// The fixed-count loops are unrolled so that the vector arrays live in registers rather than
// memory: at -O2, GCC leaves some of them rolled, which costs a quarter of the speed.
#pragma once

#include "format/Blake3Kernels.h"

#include <immintrin.h>

#include <cstring>

namespace rafs::blake3 {

namespace {

// The intrinsics' vector types, named through a struct: as template arguments they would lose
// their attributes.
struct Xmm {
    using Vec = __m128i;
};
struct Ymm {
    using Vec = __m256i;
};

// What every width does alike, written once on GCC's vector extension: 32-bit lanes of the
// intrinsics' vector type R::Vec. rotr<n> is two shifts and an or, or one VPRORD where AVX-512VL is
// on.
template <class R>
struct VectorLanes {
    using Vec = typename R::Vec;
    static constexpr size_t kLanes = sizeof(Vec) / sizeof(uint32_t);
    typedef uint32_t Words __attribute__((vector_size(sizeof(Vec))));

    static Vec of(Words w) { return __builtin_bit_cast(Vec, w); }
    static Words words(Vec v) { return __builtin_bit_cast(Words, v); }
    static Vec set1(uint32_t w) { return of(Words{} + w); }
    static Vec add(Vec a, Vec b) { return of(words(a) + words(b)); }
    static Vec xorv(Vec a, Vec b) { return of(words(a) ^ words(b)); }
    template <int n>
    static Vec rotr(Vec x) {
        return of((words(x) >> n) | (words(x) << (32 - n)));
    }
    static Vec loadu(const void* p) {
        Vec v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static void storeu(void* p, Vec v) { std::memcpy(p, &v, sizeof v); }
};

template <class L>
inline void gLanes(typename L::Vec* v, size_t a, size_t b, size_t c, size_t d, typename L::Vec x,
                   typename L::Vec y) {
    v[a] = L::add(L::add(v[a], v[b]), x);
    v[d] = L::rotr16(L::xorv(v[d], v[a]));
    v[c] = L::add(v[c], v[d]);
    v[b] = L::rotr12(L::xorv(v[b], v[c]));
    v[a] = L::add(L::add(v[a], v[b]), y);
    v[d] = L::rotr8(L::xorv(v[d], v[a]));
    v[c] = L::add(v[c], v[d]);
    v[b] = L::rotr7(L::xorv(v[b], v[c]));
}

template <class L>
inline void hashLanes(const Batch& b) {
    using Vec = typename L::Vec;
    constexpr size_t kLanes = L::kLanes;
    const size_t stride = b.blocks * kBlockLen;
    uint32_t counterLo[kLanes];
    uint32_t counterHi[kLanes];
#pragma GCC unroll 8
    for (size_t lane = 0; lane < kLanes; ++lane) {
        counterLo[lane] = static_cast<uint32_t>(counterOf(b, lane));
        counterHi[lane] = static_cast<uint32_t>(counterOf(b, lane) >> 32);
    }
    Vec h[8];
#pragma GCC unroll 8
    for (size_t i = 0; i < 8; ++i) h[i] = L::set1(kIv[i]);
    for (size_t block = 0; block < b.blocks; ++block) {
        // A block's 16 words, kLanes at a time from each input, transposed into m[word].
        Vec m[16];
#pragma GCC unroll 8
        for (size_t part = 0; part < 16 / kLanes; ++part) {
#pragma GCC unroll 8
            for (size_t lane = 0; lane < kLanes; ++lane) {
                m[part * kLanes + lane] = L::loadu(b.in + lane * stride + block * kBlockLen + part * kLanes * 4);
            }
            L::transpose(m + part * kLanes);
        }
        Vec v[16] = {
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
            L::set1(kIv[0]), L::set1(kIv[1]), L::set1(kIv[2]), L::set1(kIv[3]),
            L::loadu(counterLo), L::loadu(counterHi),
            L::set1(kBlockLen), L::set1(blockFlags(b, block)),
        };
#pragma GCC unroll 7
        for (const auto& s : kSchedule.order) {
            gLanes<L>(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
            gLanes<L>(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
            gLanes<L>(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
            gLanes<L>(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
            gLanes<L>(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
            gLanes<L>(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
            gLanes<L>(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
            gLanes<L>(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
#pragma GCC unroll 8
        for (size_t i = 0; i < 8; ++i) h[i] = L::xorv(v[i], v[i + 8]);
    }
    // Back to one chaining value per input: h[part * kLanes + lane] holds kLanes of its words.
#pragma GCC unroll 8
    for (size_t part = 0; part < 8 / kLanes; ++part) L::transpose(h + part * kLanes);
#pragma GCC unroll 8
    for (size_t lane = 0; lane < kLanes; ++lane) {
#pragma GCC unroll 8
        for (size_t part = 0; part < 8 / kLanes; ++part) {
            L::storeu(b.out + lane * kCvLen + part * kLanes * 4, h[part * kLanes + lane]);
        }
    }
}

}  // namespace

}  // namespace rafs::blake3
