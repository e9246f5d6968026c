// The 8-lane kernel for AVX2 (compiled with -mavx2: format/meson.build).
#include "format/Blake3Lanes256.h"

namespace rafs::blake3 {

namespace {

// Rotations by whole bytes are one byte shuffle (GCC makes them shifts); the others two shifts and
// an or.
struct Avx2Lanes : Lanes256 {
    static Vec rotr16(Vec x) {
        return _mm256_shuffle_epi8(x, _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0,
                                                        1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    }
    static Vec rotr8(Vec x) {
        return _mm256_shuffle_epi8(x, _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3,
                                                        0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
    }
    static Vec rotr12(Vec x) { return rotr<12>(x); }
    static Vec rotr7(Vec x) { return rotr<7>(x); }
};

}  // namespace

void hash8Avx2(const Batch& b) { hashLanes<Avx2Lanes>(b); }

}  // namespace rafs::blake3
