// A new file written front to back through a buffer, with every write error reported as an
// Error naming the file (a full file system included).
#pragma once

#include "format/UniqueFd.h"

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace rafs::build {

class OutputFile {
public:
    // Creates `path`, which must not exist yet.
    explicit OutputFile(std::filesystem::path path);

    void write(std::span<const uint8_t> data);
    void writeZeros(uint64_t count);
    uint64_t offset() const { return offset_; }
    // Hands what is buffered to the file, so that a reader of the path sees every byte written.
    void flush();
    // Flushes, fsyncs and closes; the file is complete once this returns.
    void commit();
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    UniqueFd fd_;
    uint64_t offset_ = 0;
    std::vector<uint8_t> buffer_;
};

template <typename T>
std::span<const uint8_t> bytesOf(const T& value) {
    return {reinterpret_cast<const uint8_t*>(&value), sizeof(T)};
}

}  // namespace rafs::build
