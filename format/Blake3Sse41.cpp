// The 4-lane kernel for SSE4.1 (compiled with -msse4.1: format/meson.build). It also finishes the
// 8-lane backends' batches of four.
#include "format/Blake3Lanes.h"

namespace rafs::blake3 {

namespace {

struct Sse41Lanes : VectorLanes<Xmm> {
    // Rotations by whole bytes are one byte shuffle (GCC makes them shifts); the others two shifts
    // and an or.
    static Vec rotr16(Vec x) {
        return _mm_shuffle_epi8(x, _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    }
    static Vec rotr8(Vec x) {
        return _mm_shuffle_epi8(x, _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
    }
    static Vec rotr12(Vec x) { return rotr<12>(x); }
    static Vec rotr7(Vec x) { return rotr<7>(x); }

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
