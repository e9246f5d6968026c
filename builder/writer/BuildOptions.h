// What a build produces, as chosen on mkrafs's command line.
#pragma once

#include "kernel-abi/rafs.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rafs::build {

struct BuildOptions {
    std::string output;                 // DIR: DIR/image.boot and DIR/blobs/<blob-id>
    std::vector<std::string> sources;   // directories or tar layers ("-" = stdin), lowest first
    uint32_t chunk_size = kDefaultChunkSize;
    Compressor compressor = Compressor::Zstd;
    Digester digester = Digester::Blake3;
    int compression_level = 0;          // 0 = the codec's default
    std::optional<std::string> prefetch_list;  // file with one absolute path per line
    bool prefetch_first = true;         // the list's files' chunks lead their blobs (PrefetchLayout.h)
    std::optional<int64_t> mtime;       // overrides every entry's mtime (seconds, nsec = 0)
    unsigned threads = 0;               // 0 = one per CPU
    bool chunk_table = true;            // see BootstrapOptions::chunk_table
    std::optional<std::string> chunk_dict;  // a bootstrap whose chunks are referenced, not stored
};

// Throws Error naming the first invalid option value.
void validate(const BuildOptions& options);

}  // namespace rafs::build
