// BLAKE3 in its plain hash mode with 32-byte output, written from the specification. The input is
// cut into 1 KiB chunks whose chaining values form a binary tree; whole chunks and parent nodes are
// compressed several at a time with SSE4.1, AVX2 or AVX-512 when the CPU has them, since this
// hashes multi-GiB container layers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace rafs {

class Blake3 {
public:
    // How many inputs are compressed at once: Portable does one, Sse41 four, Avx2 and Avx512
    // (AVX-512F and VL, 256-bit vectors with its rotate instruction) eight.
    enum class Backend : uint8_t { Portable, Sse41, Avx2, Avx512 };

    static constexpr size_t kBlockLen = 64;
    static constexpr size_t kChunkLen = 1024;

    // The widest backend this CPU runs, detected once at run time.
    static Backend bestBackend();
    static bool supported(Backend backend);
    static std::string_view backendName(Backend backend);

    Blake3();
    // Tests and benchmarks pin a backend; throws Error if this CPU cannot run it.
    explicit Blake3(Backend backend);

    void update(std::span<const uint8_t> data);
    // Leaves the state as it is, so more input may follow and a later finish() hashes all of it.
    std::array<uint8_t, 32> finish() const;

    Backend backend() const { return backend_; }

private:
    using Words8 = std::array<uint32_t, 8>;
    // One entry per level of a tree of 2^54 chunks, which is 2^64 bytes.
    static constexpr size_t kMaxDepth = 54;

    size_t chunkLen() const { return blocksDone_ * kBlockLen + blockLen_; }
    void absorb(std::span<const uint8_t> data);
    void finishChunk();
    void hashSubtree(std::span<const uint8_t> data, size_t chunks);
    void pushSubtree(const Words8& cv, uint64_t chunks);

    Backend backend_;
    // The chunk being filled: its chaining value so far and its last, not yet compressed, block.
    Words8 chunkCv_;
    std::array<uint8_t, kBlockLen> block_{};
    size_t blockLen_ = 0;
    size_t blocksDone_ = 0;
    uint64_t chunkCounter_ = 0;
    // Chaining values of the complete subtrees left of the current chunk, largest first.
    std::array<Words8, kMaxDepth> stack_{};
    size_t stackLen_ = 0;
};

}  // namespace rafs
