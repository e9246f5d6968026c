// A bootstrap served through its own cachefiles cookie (the image's fsid): a 4 KiB-aligned copy,
// zero-padded to 4 KiB, since the object's anonymous fd takes direct-I/O writes only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace rafsd {

class FscacheBootstrap {
public:
    explicit FscacheBootstrap(std::span<const uint8_t> bytes);

    // The file's size (copen), not padded.
    uint64_t size() const { return size_; }

    // Writes what a READ of [offset, offset + length) needs through `anon_fd`: all of the bootstrap
    // when `whole` (its first READ: the object surely has its backing file then, which right after
    // copen it may not yet, ENOBUFS), else the READ's blocks. Throws rafs::Error naming `what`.
    void write(int anon_fd, uint64_t offset, uint64_t length, bool whole, std::string_view what) const;

private:
    std::shared_ptr<uint8_t> data_;
    uint64_t size_;
    uint64_t padded_;
};

}  // namespace rafsd
