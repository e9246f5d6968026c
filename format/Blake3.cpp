#include "format/Blake3.h"

#include "format/Blake3Kernels.h"
#include "format/Error.h"

#include <algorithm>
#include <bit>
#include <cstring>

// The SIMD kernels are units of their own, each compiled for its instruction set (Blake3Kernels.h);
// they only run once bestBackend() has seen the CPU support them.
#if defined(__x86_64__) || defined(__i386__)
#define RAFS_BLAKE3_X86 1
#endif

namespace rafs {

namespace {

using Words8 = std::array<uint32_t, 8>;
using Words16 = std::array<uint32_t, 16>;
using namespace blake3;

constexpr Words8 kIvWords = std::to_array(kIv);
constexpr size_t kBlocksPerChunk = kChunkLen / kBlockLen;
// Bounds the chunk chaining values of one subtree, kept on the stack, to 8 KiB.
constexpr size_t kMaxSubtreeChunks = 256;

uint32_t loadLe32(const uint8_t* p) {
    uint32_t w;
    std::memcpy(&w, p, sizeof w);
    if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap32(w);
    return w;
}

void storeLe32(uint8_t* p, uint32_t w) {
    if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap32(w);
    std::memcpy(p, &w, sizeof w);
}

Words16 loadBlock(const uint8_t* p) {
    Words16 m;
    for (size_t i = 0; i < 16; ++i) m[i] = loadLe32(p + 4 * i);
    return m;
}

Words8 loadCv(const uint8_t* p) {
    Words8 cv;
    for (size_t i = 0; i < 8; ++i) cv[i] = loadLe32(p + 4 * i);
    return cv;
}

void storeCv(uint8_t* p, const Words8& cv) {
    for (size_t i = 0; i < 8; ++i) storeLe32(p + 4 * i, cv[i]);
}

Words16 concat(const Words8& left, const Words8& right) {
    Words16 m;
    std::copy(left.begin(), left.end(), m.begin());
    std::copy(right.begin(), right.end(), m.begin() + 8);
    return m;
}

inline void g(Words16& v, size_t a, size_t b, size_t c, size_t d, uint32_t x, uint32_t y) {
    v[a] = v[a] + v[b] + x;
    v[d] = std::rotr(v[d] ^ v[a], 16);
    v[c] = v[c] + v[d];
    v[b] = std::rotr(v[b] ^ v[c], 12);
    v[a] = v[a] + v[b] + y;
    v[d] = std::rotr(v[d] ^ v[a], 8);
    v[c] = v[c] + v[d];
    v[b] = std::rotr(v[b] ^ v[c], 7);
}

// The compression function, truncated to the first 8 output words: all that a chaining value or
// a 32-byte hash needs.
Words8 compress(const Words8& cv, const Words16& m, uint64_t counter, uint32_t blockLen,
                uint32_t flags) {
    Words16 v = {cv[0],  cv[1],  cv[2],  cv[3],
                 cv[4],  cv[5],  cv[6],  cv[7],
                 kIv[0], kIv[1], kIv[2], kIv[3],
                 static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), blockLen, flags};
    // Unrolled, the schedule's indices become constants.
#pragma GCC unroll 7
    for (const auto& s : kSchedule.order) {
        g(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
        g(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
        g(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
        g(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
        g(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
        g(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
        g(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
        g(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    Words8 out;
    for (size_t i = 0; i < 8; ++i) out[i] = v[i] ^ v[i + 8];
    return out;
}

Words8 parentCv(const Words8& left, const Words8& right) {
    return compress(kIvWords, concat(left, right), 0, kBlockLen, kParent);
}

void advance(Batch& b, size_t inputs) {
    b.in += inputs * b.blocks * kBlockLen;
    b.out += inputs * kCvLen;
    b.counter = counterOf(b, inputs);
}

void hashOnePortable(const Batch& b) {
    Words8 cv = kIvWords;
    for (size_t i = 0; i < b.blocks; ++i) {
        cv = compress(cv, loadBlock(b.in + i * kBlockLen), b.counter, kBlockLen, blockFlags(b, i));
    }
    storeCv(b.out, cv);
}

// Every kernel reads all of its inputs before writing its outputs, which is what lets parent
// levels be reduced in place.
void hashMany([[maybe_unused]] Blake3::Backend backend, Batch b, size_t count) {
#ifdef RAFS_BLAKE3_X86
    if (backend == Blake3::Backend::Avx512) {
        for (; count >= 8; count -= 8, advance(b, 8)) hash8Avx512(b);
    }
    if (backend == Blake3::Backend::Avx2) {
        for (; count >= 8; count -= 8, advance(b, 8)) hash8Avx2(b);
    }
    if (backend != Blake3::Backend::Portable) {
        for (; count >= 4; count -= 4, advance(b, 4)) hash4Sse41(b);
    }
#endif
    for (; count > 0; --count, advance(b, 1)) hashOnePortable(b);
}

}  // namespace

Blake3::Backend Blake3::bestBackend() {
    static const Backend best = [] {
#ifdef RAFS_BLAKE3_X86
        __builtin_cpu_init();
        // The 8-lane paths finish batches of four with the SSE4.1 kernel.
        if (!__builtin_cpu_supports("sse4.1")) return Backend::Portable;
        if (!__builtin_cpu_supports("avx2")) return Backend::Sse41;
        if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512vl")) return Backend::Avx2;
        return Backend::Avx512;
#endif
        return Backend::Portable;
    }();
    return best;
}

bool Blake3::supported(Backend backend) {
    // Each backend needs a superset of what the narrower ones need.
    return backend <= bestBackend();
}

std::string_view Blake3::backendName(Backend backend) {
    switch (backend) {
    case Backend::Portable: return "portable";
    case Backend::Sse41: return "sse4.1";
    case Backend::Avx2: return "avx2";
    case Backend::Avx512: return "avx512";
    }
    return "unknown";
}

Blake3::Blake3() : Blake3(bestBackend()) {}

Blake3::Blake3(Backend backend) : backend_(backend), chunkCv_(kIvWords) {
    if (!supported(backend)) fail("BLAKE3 backend {} is not supported by this CPU", backendName(backend));
}

void Blake3::update(std::span<const uint8_t> data) {
    while (!data.empty()) {
        // More input follows, so a full chunk is not the root and can be closed.
        if (chunkLen() == kChunkLen) finishChunk();
        if (chunkLen() == 0 && data.size() > kChunkLen) {
            // The largest whole subtree that starts at this chunk and leaves input after it, so
            // that it cannot be the root either.
            size_t chunks = kMaxSubtreeChunks;
            while (chunks > 1 && (chunks * kChunkLen >= data.size() || chunkCounter_ % chunks != 0)) {
                chunks /= 2;
            }
            hashSubtree(data.first(chunks * kChunkLen), chunks);
            data = data.subspan(chunks * kChunkLen);
            continue;
        }
        size_t take = std::min(kChunkLen - chunkLen(), data.size());
        absorb(data.first(take));
        data = data.subspan(take);
    }
}

void Blake3::absorb(std::span<const uint8_t> data) {
    auto compressBlock = [this](const uint8_t* p) {
        chunkCv_ = compress(chunkCv_, loadBlock(p), chunkCounter_, kBlockLen,
                            blocksDone_ == 0 ? kChunkStart : 0);
        ++blocksDone_;
    };
    while (!data.empty()) {
        // A block is compressed only once more input shows it is not the chunk's last, which
        // carries CHUNK_END.
        if (blockLen_ == kBlockLen) {
            compressBlock(block_.data());
            blockLen_ = 0;
        }
        if (blockLen_ == 0) {
            for (; data.size() > kBlockLen; data = data.subspan(kBlockLen)) compressBlock(data.data());
        }
        size_t take = std::min(kBlockLen - blockLen_, data.size());
        std::memcpy(block_.data() + blockLen_, data.data(), take);
        blockLen_ += take;
        data = data.subspan(take);
    }
}

void Blake3::finishChunk() {
    Words8 cv = compress(chunkCv_, loadBlock(block_.data()), chunkCounter_, kBlockLen,
                         kChunkEnd | (blocksDone_ == 0 ? kChunkStart : 0));
    pushSubtree(cv, 1);
}

void Blake3::hashSubtree(std::span<const uint8_t> data, size_t chunks) {
    alignas(32) std::array<uint8_t, kMaxSubtreeChunks * kCvLen> cvs;
    hashMany(backend_,
             {data.data(), kBlocksPerChunk, chunkCounter_, true, 0, kChunkStart, kChunkEnd, cvs.data()},
             chunks);
    // Each level halves in place: parent i reads bytes [64i, 64i+64) and writes [32i, 32i+32),
    // which only holds pairs that are already read.
    for (size_t n = chunks; n > 1; n /= 2) {
        hashMany(backend_, {cvs.data(), 1, 0, false, kParent, 0, 0, cvs.data()}, n / 2);
    }
    pushSubtree(loadCv(cvs.data()), chunks);
}

// Adds the chaining value of the `chunks` (a power of two) chunks starting at chunkCounter_ and
// resets the current chunk to follow them. Stack entries are merged as soon as they have a right
// sibling, so the stack holds one subtree per set bit of the chunk count.
void Blake3::pushSubtree(const Words8& cv, uint64_t chunks) {
    Words8 node = cv;
    for (uint64_t total = (chunkCounter_ + chunks) / chunks; total % 2 == 0; total /= 2) {
        node = parentCv(stack_[--stackLen_], node);
    }
    stack_[stackLen_++] = node;
    chunkCounter_ += chunks;
    chunkCv_ = kIvWords;
    blocksDone_ = 0;
    blockLen_ = 0;
}

std::array<uint8_t, 32> Blake3::finish() const {
    // The last chunk is never empty unless the whole input is, and its final block is zero-padded.
    std::array<uint8_t, kBlockLen> last{};
    std::memcpy(last.data(), block_.data(), blockLen_);
    Words8 cv = chunkCv_;
    Words16 m = loadBlock(last.data());
    uint64_t counter = chunkCounter_;
    auto blockLen = static_cast<uint32_t>(blockLen_);
    uint32_t flags = kChunkEnd | (blocksDone_ == 0 ? kChunkStart : 0);
    for (size_t i = stackLen_; i-- > 0;) {
        m = concat(stack_[i], compress(cv, m, counter, blockLen, flags));
        cv = kIvWords;
        counter = 0;
        blockLen = kBlockLen;
        flags = kParent;
    }
    // The root's counter numbers output blocks; the 32-byte hash is output block 0.
    Words8 root = compress(cv, m, 0, blockLen, flags | kRoot);
    std::array<uint8_t, 32> out;
    storeCv(out.data(), root);
    return out;
}

}  // namespace rafs
