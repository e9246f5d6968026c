// The 8-lane kernel with AVX-512VL's VPRORD on 256-bit vectors (compiled with -mavx2 -mavx512f
// -mavx512vl: format/meson.build): every rotation is VectorLanes::rotr, which GCC makes one
// instruction here.
#include "format/Blake3Lanes256.h"

namespace rafs::blake3 {

namespace {

struct Avx512Lanes : Lanes256 {
    static Vec rotr16(Vec x) { return rotr<16>(x); }
    static Vec rotr12(Vec x) { return rotr<12>(x); }
    static Vec rotr8(Vec x) { return rotr<8>(x); }
    static Vec rotr7(Vec x) { return rotr<7>(x); }
};

}  // namespace

void hash8Avx512(const Batch& b) { hashLanes<Avx512Lanes>(b); }

}  // namespace rafs::blake3
