// An image of one file, `src/<name>` holding `data`, built by mkrafs's builder (one thread) into
// `dir`/img: img/image.boot and img/blobs/<blob id>.
#pragma once

#include "builder/commands/Build.h"
#include "builder/writer/BuildOptions.h"
#include "tests/unit/ImageTestUtil.h"

#include <cstdint>
#include <filesystem>
#include <span>
#include <sstream>
#include <string>

namespace rafs::test {

inline void buildOneFileImage(const std::filesystem::path& dir, const std::string& name, std::span<const uint8_t> data,
                              uint32_t chunk_size = kDefaultChunkSize) {
    std::filesystem::create_directories(dir / "src");
    writeFile((dir / "src" / name).string(), data);
    build::BuildOptions options;
    options.output = dir / "img";
    options.sources = {dir / "src"};
    options.chunk_size = chunk_size;
    options.threads = 1;
    std::ostringstream log;
    build::build(options, log);
}

}  // namespace rafs::test
