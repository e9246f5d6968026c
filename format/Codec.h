// Per-chunk compression as Nydus stores it: a raw LZ4 block, one zstd frame, one gzip member, or
// nothing. Decompression always targets a known uncompressed size.
#pragma once

#include "kernel-abi/rafs.h"

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace rafs {

std::string_view compressorName(Compressor c);
// "none", "zstd", "lz4_block" or "gzip"; throws Error naming the bad value.
Compressor parseCompressor(std::string_view name);

// Compresses `in` into `out` (resized to fit). Returns false, leaving `out` unspecified, when the
// result would not be smaller than the input: the caller then stores the chunk raw.
bool compress(Compressor c, std::span<const uint8_t> in, std::vector<uint8_t>& out, int level = 0);

// Decompresses exactly out.size() bytes; throws Error if the input is corrupt or of another size.
void decompress(Compressor c, std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace rafs
