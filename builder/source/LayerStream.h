// A tar layer's bytes, decompressed here rather than by libarchive: libarchive stops reading at
// the tar end marker and never checks the gzip CRC and length, so a damaged layer could build
// silently. Plain, gzip (one or more members) and zstd (one or more frames) are detected by
// their magic numbers; finish() reads to the end of the input so every checksum is verified.
#pragma once

#include "builder/source/ByteSource.h"

#include <zlib.h>
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

    std::unique_ptr<ByteSource> source_;
    const std::string& name_;
    Kind kind_ = Kind::Plain;
    std::vector<uint8_t> in_;
    size_t in_pos_ = 0;
    bool in_eof_ = false;
    bool stream_done_ = false;  // a gzip member or zstd frame ended exactly here
    z_stream zs_{};
    ZSTD_DCtx* zstd_ = nullptr;
};

}  // namespace rafs::build
