// A tar layer's bytes, decompressed here rather than by libarchive: libarchive stops reading at
// the tar end marker and never checks the gzip CRC and length, so a damaged layer could build
// silently. Plain, gzip (one or more members) and zstd (one or more frames) are detected by
// their magic numbers; finish() reads to the end of the input so every checksum is verified.
// Gzip is inflated by ISA-L (igzip), several times faster than zlib on the same input; it checks
// each member's CRC-32 and length.
// Reading and decompressing run on a thread of their own, a few blocks ahead of the reader, so
// that the thread applying the tar to the tree (and feeding the chunk pipeline) does not also
// inflate: on two CPUs the two overlap.
#pragma once

#include "builder/source/ByteSource.h"
#include "format/Digest.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace rafs::build {

class LayerStream {
public:
    // `digest`: also hash the decompressed bytes (digest()).
    explicit LayerStream(std::unique_ptr<ByteSource> source, bool digest = false);
    // Stops the thread, which ends after the read of the source it may be waiting for.
    ~LayerStream();
    LayerStream(const LayerStream&) = delete;
    LayerStream& operator=(const LayerStream&) = delete;

    // The next decompressed bytes, valid until the next call; empty at the end, once the whole
    // input has been read and verified. Throws Error on corrupt or truncated input.
    std::span<const uint8_t> next();
    // Consumes the rest of the input, checking its integrity.
    void finish();
    // "sha256:<hex>" of the decompressed bytes, after finish(), if asked for at construction.
    std::string digest() const;

private:
    struct Block {
        std::unique_ptr<uint8_t[]> bytes;
        size_t size = 0;
    };
    struct Stopped {};  // thrown on the thread when the stream is destroyed early

    void run();
    void decompress();
    bool fill();  // more raw input; false at end of input
    void emit(Block& block);  // hands a full block to the reader, takes an empty one

    std::unique_ptr<ByteSource> source_;
    const std::string& name_;
    std::optional<rafs::Hasher> hasher_;  // the thread's

    // The thread's raw input.
    std::vector<uint8_t> in_;
    size_t in_pos_ = 0;
    bool in_eof_ = false;

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<Block> ready_;   // decompressed, not read yet
    std::vector<Block> spare_;  // read, for reuse
    Block current_;             // the reader's
    bool ended_ = false;        // every block is in ready_ and the input was verified
    bool stopping_ = false;
    std::exception_ptr error_;
    std::thread thread_;  // last: starts when the rest is ready
};

}  // namespace rafs::build
