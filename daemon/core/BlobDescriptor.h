// Everything the core needs to serve one data blob: its identity and codec from the bootstrap's
// blob table, and per chunk its place in the blob (ci array) and its digest.
#pragma once

#include "format/ChunkInfoCodec.h"
#include "format/Digest.h"

#include <string>
#include <vector>

namespace rafsd {

struct BlobDescriptor {
    std::string id;
    rafs::Compressor compressor = rafs::Compressor::None;
    rafs::Digester digester = rafs::Digester::Blake3;
    uint32_t chunk_size = 0;
    uint64_t uncompressed_size = 0;
    std::vector<rafs::BlobChunk> chunks;  // by ci index, ordered by uncompressed offset
    std::vector<rafs::Digest> digests;    // by ci index

    // Names what cached data of this blob means: the digester, and each chunk's uncompressed
    // place and digest (sha256 over them). Data cached and verified under one description is
    // right for another only if both have the same fingerprint; the blob id alone is a name any
    // image may give any bytes.
    rafs::Digest fingerprint() const;
};

}  // namespace rafsd
