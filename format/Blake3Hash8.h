// The 8-lane BLAKE3 kernel, one input per 32-bit lane of a 256-bit vector: v[i] holds state word
// i of every input, so the round function is the portable one applied to whole vectors. Included
// only by translation units compiled for AVX2 or better (Blake3Avx2.cpp, Blake3Avx512.cpp), each
// with its own `Rotations`; everything here has internal linkage (see Blake3Kernels.h).
//
// The fixed-count loops are unrolled so that the vector arrays live in registers rather than
// memory: at -O2, GCC leaves some of them rolled, which costs a quarter of the speed.
#pragma once

#include "format/Blake3Kernels.h"

#include <immintrin.h>

namespace rafs::blake3 {

namespace {

inline __m256i set8(uint32_t w) { return _mm256_set1_epi32(static_cast<int>(w)); }

template <class Rotations>
inline void g8(__m256i* v, size_t a, size_t b, size_t c, size_t d, __m256i x, __m256i y) {
    v[a] = _mm256_add_epi32(_mm256_add_epi32(v[a], v[b]), x);
    v[d] = Rotations::rotr16(_mm256_xor_si256(v[d], v[a]));
    v[c] = _mm256_add_epi32(v[c], v[d]);
    v[b] = Rotations::rotr12(_mm256_xor_si256(v[b], v[c]));
    v[a] = _mm256_add_epi32(_mm256_add_epi32(v[a], v[b]), y);
    v[d] = Rotations::rotr8(_mm256_xor_si256(v[d], v[a]));
    v[c] = _mm256_add_epi32(v[c], v[d]);
    v[b] = Rotations::rotr7(_mm256_xor_si256(v[b], v[c]));
}

// 8x8 transpose of 32-bit words, its own inverse. The unpacks work within 128-bit halves, so
// words 0-3 of the rows end up in the low halves and words 4-7 in the high halves until the
// final cross-half permutes.
inline void transpose8(__m256i* r) {
    __m256i a[8];
#pragma GCC unroll 8
    for (size_t i = 0; i < 4; ++i) {
        a[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    __m256i b[8];
#pragma GCC unroll 8
    for (size_t i = 0; i < 2; ++i) {
        b[4 * i + 0] = _mm256_unpacklo_epi64(a[4 * i + 0], a[4 * i + 2]);
        b[4 * i + 1] = _mm256_unpackhi_epi64(a[4 * i + 0], a[4 * i + 2]);
        b[4 * i + 2] = _mm256_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm256_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
#pragma GCC unroll 8
    for (size_t i = 0; i < 4; ++i) {
        r[i] = _mm256_permute2x128_si256(b[i], b[i + 4], 0x20);
        r[i + 4] = _mm256_permute2x128_si256(b[i], b[i + 4], 0x31);
    }
}

template <class Rotations>
inline void hash8(const Batch& b) {
    const size_t stride = b.blocks * kBlockLen;
    alignas(32) uint32_t counterLo[8];
    alignas(32) uint32_t counterHi[8];
#pragma GCC unroll 8
    for (size_t lane = 0; lane < 8; ++lane) {
        counterLo[lane] = static_cast<uint32_t>(counterOf(b, lane));
        counterHi[lane] = static_cast<uint32_t>(counterOf(b, lane) >> 32);
    }
    __m256i h[8];
#pragma GCC unroll 8
    for (size_t i = 0; i < 8; ++i) h[i] = set8(kIv[i]);
    for (size_t block = 0; block < b.blocks; ++block) {
        __m256i m[16];
#pragma GCC unroll 8
        for (size_t half = 0; half < 2; ++half) {
#pragma GCC unroll 8
            for (size_t lane = 0; lane < 8; ++lane) {
                const uint8_t* p = b.in + lane * stride + block * kBlockLen + half * 32;
                m[half * 8 + lane] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
            }
            transpose8(m + half * 8);
        }
        __m256i v[16] = {
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
            set8(kIv[0]), set8(kIv[1]), set8(kIv[2]), set8(kIv[3]),
            _mm256_load_si256(reinterpret_cast<const __m256i*>(counterLo)),
            _mm256_load_si256(reinterpret_cast<const __m256i*>(counterHi)),
            set8(kBlockLen), set8(blockFlags(b, block)),
        };
#pragma GCC unroll 7
        for (const auto& s : kSchedule.order) {
            g8<Rotations>(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
            g8<Rotations>(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
            g8<Rotations>(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
            g8<Rotations>(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
            g8<Rotations>(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
            g8<Rotations>(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
            g8<Rotations>(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
            g8<Rotations>(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
#pragma GCC unroll 8
        for (size_t i = 0; i < 8; ++i) h[i] = _mm256_xor_si256(v[i], v[i + 8]);
    }
    transpose8(h);
#pragma GCC unroll 8
    for (size_t lane = 0; lane < 8; ++lane) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.out + lane * kCvLen), h[lane]);
    }
}

}  // namespace

}  // namespace rafs::blake3
