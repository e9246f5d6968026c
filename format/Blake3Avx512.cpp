// The 8-lane kernel with AVX-512VL's VPRORD on 256-bit vectors (compiled with -mavx2 -mavx512f
// -mavx512vl: format/meson.build): one instruction per rotation.
#include "format/Blake3Lanes256.h"

namespace rafs::blake3 {

namespace {

struct Avx512Lanes : Lanes256 {
    static Vec rotr16(Vec x) { return _mm256_ror_epi32(x, 16); }
    static Vec rotr12(Vec x) { return _mm256_ror_epi32(x, 12); }
    static Vec rotr8(Vec x) { return _mm256_ror_epi32(x, 8); }
    static Vec rotr7(Vec x) { return _mm256_ror_epi32(x, 7); }
};

}  // namespace

void hash8Avx512(const Batch& b) { hashLanes<Avx512Lanes>(b); }

}  // namespace rafs::blake3
