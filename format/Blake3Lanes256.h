// The 256-bit transpose of the 8-lane BLAKE3 kernels (Blake3Avx2.cpp, Blake3Avx512.cpp),
// which add their own rotations. Included only by units compiled for AVX2 or better.
#pragma once

#include "format/Blake3Lanes.h"

namespace rafs::blake3 {

namespace {

// The 256-bit part both 8-lane units share; each adds its own rotations.
struct Lanes256 : VectorLanes<Ymm> {
    // 8x8 transpose of 32-bit words, its own inverse. The unpacks work within 128-bit halves, so
    // words 0-3 of the rows end up in the low halves and words 4-7 in the high halves until the
    // final cross-half permutes.
    static void transpose(Vec* r) {
        Vec a[8];
#pragma GCC unroll 8
        for (size_t i = 0; i < 4; ++i) {
            a[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        Vec b[8];
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
};

}  // namespace

}  // namespace rafs::blake3
