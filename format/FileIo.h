// Whole reads and writes: the loops around pread/pwrite/write that retry EINTR and continue after
// short transfers. Every failure throws Error naming `what` (the file, as the user knows it).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace rafs {

// Reads exactly out.size() bytes at `offset`; a file that ends first is "<what>: file shrank
// while reading" (callers check sizes first, so an early end means the file changed).
void preadExactly(int fd, std::span<uint8_t> out, uint64_t offset, std::string_view what);
// Writes all of `data` at `offset`; a write that reports more than asked counts as all of it.
void pwriteAll(int fd, std::span<const uint8_t> data, uint64_t offset, std::string_view what);
// Writes all of `data` at the file position.
void writeAll(int fd, std::span<const uint8_t> data, std::string_view what);

// The whole file at `path`; throws Error naming it if it cannot be opened or read, or holds more
// than `max_bytes` (read no further: a wrong path to a device or a huge log costs no memory).
std::string readFile(const std::string& path, uint64_t max_bytes = UINT64_MAX);

// The path the kernel has for an open fd (/proc/self/fd, proc(5): " (deleted)" appended once the
// file is removed), or nothing if it cannot be read.
std::optional<std::string> pathOfFd(int fd);

}  // namespace rafs
