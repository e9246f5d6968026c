// A tar layer's bytes, decompressed here rather than by libarchive: libarchive stops reading at
// the tar end marker and never checks the gzip CRC and length, so a damaged layer could build
// silently. Plain, gzip (one or more members) and zstd (one or more frames) are detected by
// their magic numbers; finish() reads to the end of the input so every checksum is verified.
// Gzip is inflated by ISA-L (igzip), several times faster than zlib on the same input; it checks
// each member's CRC-32 and length.
#pragma once

#include "builder/source/ByteSource.h"

#include <isa-l/igzip_lib.h>
#include <zstd.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace rafs::build {

class LayerStream {
public:
    explicit LayerStream(std::unique_ptr<ByteSource> source);
    ~LayerStream();
    LayerStream(const LayerStream&) = delete;
    LayerStream& operator=(const LayerStream&) = delete;

    // Up to out.size() decompressed bytes; 0 at the end. Throws Error on corrupt or truncated
    // input.
    size_t read(std::span<uint8_t> out);
    // Consumes the rest of the input, checking its integrity.
    void finish();

private:
    enum class Kind { Plain, Gzip, Zstd };
    bool fill();  // more raw input; false at end of input
    void startGzipMember();

    std::unique_ptr<ByteSource> source_;
    const std::string& name_;
    Kind kind_ = Kind::Plain;
    std::vector<uint8_t> in_;
    size_t in_pos_ = 0;
    bool in_eof_ = false;
    bool stream_done_ = false;  // a gzip member or zstd frame ended exactly here
    std::unique_ptr<inflate_state> gzip_;  // large (its history window): on the heap
    ZSTD_DCtx* zstd_ = nullptr;
};

}  // namespace rafs::build
