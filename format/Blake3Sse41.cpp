// The 4-lane kernel for SSE4.1 (compiled with -msse4.1: format/meson.build). It also finishes the
// 8-lane backends' batches of four.
#include "format/Blake3Lanes.h"

namespace rafs::blake3 {

namespace {

struct Sse41Lanes {
    using Vec = __m128i;
    static constexpr size_t kLanes = 4;
    static Vec set1(uint32_t w) { return _mm_set1_epi32(static_cast<int>(w)); }
    static Vec add(Vec a, Vec b) { return _mm_add_epi32(a, b); }
    static Vec xorv(Vec a, Vec b) { return _mm_xor_si128(a, b); }
    static Vec loadu(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
    static Vec load(const uint32_t* p) { return _mm_load_si128(reinterpret_cast<const __m128i*>(p)); }
    static void storeu(uint8_t* p, Vec x) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), x); }
    // Rotations by whole bytes are one byte shuffle; the others two shifts and an or.
    static Vec rotr16(Vec x) {
        return _mm_shuffle_epi8(x, _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    }
    static Vec rotr8(Vec x) {
        return _mm_shuffle_epi8(x, _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
    }
    static Vec rotr12(Vec x) { return _mm_or_si128(_mm_srli_epi32(x, 12), _mm_slli_epi32(x, 20)); }
    static Vec rotr7(Vec x) { return _mm_or_si128(_mm_srli_epi32(x, 7), _mm_slli_epi32(x, 25)); }

    // Rows in, columns out: afterwards r[i] holds word i of each of the four original rows.
    static void transpose(Vec* r) {
        const Vec lo01 = _mm_unpacklo_epi32(r[0], r[1]);
        const Vec lo23 = _mm_unpacklo_epi32(r[2], r[3]);
        const Vec hi01 = _mm_unpackhi_epi32(r[0], r[1]);
        const Vec hi23 = _mm_unpackhi_epi32(r[2], r[3]);
        r[0] = _mm_unpacklo_epi64(lo01, lo23);
        r[1] = _mm_unpackhi_epi64(lo01, lo23);
        r[2] = _mm_unpacklo_epi64(hi01, hi23);
        r[3] = _mm_unpackhi_epi64(hi01, hi23);
    }
};

}  // namespace

void hash4Sse41(const Batch& b) { hashLanes<Sse41Lanes>(b); }

}  // namespace rafs::blake3
