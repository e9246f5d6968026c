// A read-only file read by offset, with every failure reported as an Error naming the file.
#pragma once

#include "format/UniqueFd.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rafs {

class InputFile {
public:
    explicit InputFile(std::string path);

    const std::string& path() const { return path_; }
    uint64_t size() const { return size_; }

    // Reads exactly out.size() bytes at `offset`; throws Error if the file is shorter.
    void readAt(uint64_t offset, std::span<uint8_t> out) const;
    std::vector<uint8_t> read(uint64_t offset, uint64_t size) const;
    std::vector<uint8_t> readAll() const { return read(0, size_); }

private:
    std::string path_;
    UniqueFd fd_;
    uint64_t size_ = 0;
};

}  // namespace rafs
