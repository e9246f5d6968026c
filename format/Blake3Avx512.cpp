// The 8-lane kernel with AVX-512VL's VPRORD on 256-bit vectors (compiled with -mavx2 -mavx512f
// -mavx512vl: format/meson.build): one instruction per rotation.
#include "format/Blake3Hash8.h"

namespace rafs::blake3 {

namespace {

struct Avx512Rotations {
    static __m256i rotr16(__m256i x) { return _mm256_ror_epi32(x, 16); }
    static __m256i rotr12(__m256i x) { return _mm256_ror_epi32(x, 12); }
    static __m256i rotr8(__m256i x) { return _mm256_ror_epi32(x, 8); }
    static __m256i rotr7(__m256i x) { return _mm256_ror_epi32(x, 7); }
};

}  // namespace

void hash8Avx512(const Batch& b) { hash8<Avx512Rotations>(b); }

}  // namespace rafs::blake3
