#include "format/FileIo.h"

#include "format/Error.h"
#include "format/UniqueFd.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

namespace rafs {

void preadExactly(int fd, std::span<uint8_t> out, uint64_t offset, std::string_view what) {
    while (!out.empty()) {
        const ssize_t n = ::pread(fd, out.data(), out.size(), static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) failErrno(fmt::format("{}: read at offset {}", what, offset));
        if (n == 0) fail("{}: file shrank while reading", what);
        out = out.subspan(static_cast<size_t>(n));
        offset += static_cast<uint64_t>(n);
    }
}

void pwriteAll(int fd, std::span<const uint8_t> data, uint64_t offset, std::string_view what) {
    while (!data.empty()) {
        const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) failErrno(fmt::format("{}: write at offset {}", what, offset));
        if (n == 0) fail("{}: write at offset {} wrote nothing", what, offset);
        // More than asked counts as all: cachefiles' anonymous fds returned the page-rounded
        // length before Linux 6.13.
        const size_t done = std::min(static_cast<size_t>(n), data.size());
        data = data.subspan(done);
        offset += done;
    }
}

void writeAll(int fd, std::span<const uint8_t> data, std::string_view what) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) failErrno(fmt::format("cannot write {}", what));
        if (n == 0) fail("cannot write {}: wrote nothing", what);
        data = data.subspan(static_cast<size_t>(n));
    }
}

std::string readFile(const std::string& path, uint64_t max_bytes) {
    const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) failErrno("cannot read " + path);
    std::string bytes;
    char buffer[16384];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) failErrno("cannot read " + path);
        if (n == 0) return bytes;
        bytes.append(buffer, static_cast<size_t>(n));
        if (bytes.size() > max_bytes) fail("{}: larger than {} bytes", path, max_bytes);
    }
}

std::optional<std::string> pathOfFd(int fd) {
    std::error_code ec;
    std::string path = std::filesystem::read_symlink(fmt::format("/proc/self/fd/{}", fd), ec).string();
    if (ec) return std::nullopt;
    return path;
}

}  // namespace rafs
