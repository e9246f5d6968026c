#include "builder/writer/ChunkDict.h"

#include "format/Bootstrap.h"
#include "format/Codec.h"
#include "format/Error.h"

#include <cstring>

namespace rafs::build {

ChunkDict ChunkDict::load(const std::string& path, const BuildOptions& options) {
    const Bootstrap boot(path);
    ChunkDict dict;
    dict.name = path;
    if (boot.chunkSize() != options.chunk_size) {
        fail("chunk dict {}: chunk size {} differs from the build's {}", path, boot.chunkSize(), options.chunk_size);
    }
    if (boot.digester() != options.digester) {
        fail("chunk dict {}: digester {} differs from the build's {}", path, digesterName(boot.digester()),
             digesterName(options.digester));
    }
    if (boot.chunkInfos().empty()) fail("chunk dict {}: no chunk info table (built with --no-chunk-table?)", path);
    for (const BootstrapBlob& b : boot.blobs()) {
        // One compressor per image: the superblock names one for every blob.
        if (b.compressor != options.compressor) {
            fail("chunk dict {}: blob {} is compressed with {}, the build with {}", path, b.id,
                 compressorName(b.compressor), compressorName(options.compressor));
        }
        BlobInfo info;
        info.id = b.id;
        info.index = b.index;
        info.entry = b.entry;
        dict.blobs.push_back(info);
    }
    for (const ChunkInfo& c : boot.chunkInfos()) {
        ChunkRef ref;
        ref.blob_index = c.blob_index;
        ref.ci_index = c.index;
        ref.uncompressed_offset = c.uncompressed_offset;
        ref.uncompressed_size = c.uncompressed_size;
        ref.compressed_offset = c.compressed_offset;
        ref.compressed_size = c.compressed_size;
        ref.compressed = (c.flags & kChunkCompressed) != 0;
        std::memcpy(ref.digest.data(), c.block_id, ref.digest.size());
        dict.chunks.push_back(ref);
    }
    return dict;
}

}  // namespace rafs::build
