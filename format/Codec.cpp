#include "format/Codec.h"

#include "format/Error.h"

#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <limits>

namespace rafs {

std::string_view compressorName(Compressor c) {
    switch (c) {
    case Compressor::None: return "none";
    case Compressor::Lz4Block: return "lz4_block";
    case Compressor::Gzip: return "gzip";
    case Compressor::Zstd: return "zstd";
    }
    return "unknown";
}

Compressor parseCompressor(std::string_view name) {
    for (auto c : {Compressor::None, Compressor::Zstd, Compressor::Lz4Block, Compressor::Gzip}) {
        if (name == compressorName(c)) return c;
    }
    fail("unknown compressor '{}' (expected none, zstd, lz4_block or gzip)", name);
}

namespace {

// One context per thread, reused: ZSTD_compress and ZSTD_decompress make and free one per call,
// which for 1 MiB chunks costs as much as a good part of the work (allocating and clearing the
// match tables). The output is the same.
struct ZstdContexts {
    ZSTD_CCtx* c = ZSTD_createCCtx();
    ZSTD_DCtx* d = ZSTD_createDCtx();
    ~ZstdContexts() {
        ZSTD_freeCCtx(c);
        ZSTD_freeDCtx(d);
    }
};

ZstdContexts& zstdContexts() {
    thread_local ZstdContexts contexts;
    if (contexts.c == nullptr || contexts.d == nullptr) fail("zstd: out of memory for a context");
    return contexts;
}

bool compressZstd(std::span<const uint8_t> in, std::vector<uint8_t>& out, int level) {
    out.resize(ZSTD_compressBound(in.size()));
    size_t n = ZSTD_compressCCtx(zstdContexts().c, out.data(), out.size(), in.data(), in.size(),
                                 level == 0 ? ZSTD_CLEVEL_DEFAULT : level);
    if (ZSTD_isError(n)) fail("zstd compression failed: {}", ZSTD_getErrorName(n));
    out.resize(n);
    return n < in.size();
}

bool compressLz4(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
    if (in.size() > LZ4_MAX_INPUT_SIZE) fail("lz4_block: chunk of {} bytes is too large", in.size());
    int src = static_cast<int>(in.size());
    out.resize(static_cast<size_t>(LZ4_compressBound(src)));
    int n = LZ4_compress_default(reinterpret_cast<const char*>(in.data()),
                                 reinterpret_cast<char*>(out.data()), src,
                                 static_cast<int>(out.size()));
    if (n <= 0) return false;
    out.resize(static_cast<size_t>(n));
    return out.size() < in.size();
}

// One gzip member (deflate with a gzip wrapper), as flate2's GzEncoder writes it.
bool compressGzip(std::span<const uint8_t> in, std::vector<uint8_t>& out, int level) {
    z_stream zs{};
    if (deflateInit2(&zs, level == 0 ? Z_DEFAULT_COMPRESSION : level, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        fail("gzip: deflateInit2 failed");
    }
    out.resize(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
    zs.next_in = const_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    int rc = deflate(&zs, Z_FINISH);
    size_t n = zs.total_out;
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) fail("gzip compression failed ({})", rc);
    out.resize(n);
    return n < in.size();
}

void decompressGzip(std::span<const uint8_t> in, std::span<uint8_t> out) {
    z_stream zs{};
    if (inflateInit2(&zs, 15 + 16) != Z_OK) fail("gzip: inflateInit2 failed");
    zs.next_in = const_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    int rc = inflate(&zs, Z_FINISH);
    size_t n = zs.total_out;
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || n != out.size()) {
        fail("corrupt gzip chunk: got {} of {} bytes (zlib {})", n, out.size(), rc);
    }
}

}  // namespace

bool compress(Compressor c, std::span<const uint8_t> in, std::vector<uint8_t>& out, int level) {
    if (in.size() > std::numeric_limits<uInt>::max()) fail("chunk of {} bytes is too large", in.size());
    switch (c) {
    case Compressor::None: return false;
    case Compressor::Zstd: return compressZstd(in, out, level);
    case Compressor::Lz4Block: return compressLz4(in, out);
    case Compressor::Gzip: return compressGzip(in, out, level);
    }
    fail("unknown compressor {}", static_cast<uint32_t>(c));
}

void decompress(Compressor c, std::span<const uint8_t> in, std::span<uint8_t> out) {
    switch (c) {
    case Compressor::None:
        if (in.size() != out.size()) fail("raw chunk of {} bytes, expected {}", in.size(), out.size());
        std::memcpy(out.data(), in.data(), in.size());
        return;
    case Compressor::Zstd: {
        size_t n = ZSTD_decompressDCtx(zstdContexts().d, out.data(), out.size(), in.data(), in.size());
        if (ZSTD_isError(n)) fail("corrupt zstd chunk: {}", ZSTD_getErrorName(n));
        if (n != out.size()) fail("corrupt zstd chunk: {} bytes, expected {}", n, out.size());
        return;
    }
    case Compressor::Lz4Block: {
        if (in.size() > LZ4_MAX_INPUT_SIZE || out.size() > LZ4_MAX_INPUT_SIZE) {
            fail("lz4_block chunk too large");
        }
        int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()),
                                    reinterpret_cast<char*>(out.data()), static_cast<int>(in.size()),
                                    static_cast<int>(out.size()));
        if (n < 0 || static_cast<size_t>(n) != out.size()) {
            fail("corrupt lz4_block chunk: {} bytes, expected {}", n, out.size());
        }
        return;
    }
    case Compressor::Gzip: decompressGzip(in, out); return;
    }
    fail("unknown compressor {}", static_cast<uint32_t>(c));
}

}  // namespace rafs
