#include "builder/writer/OutputFile.h"
#include "format/FileIo.h"

#include "format/Error.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace rafs::build {

namespace {
constexpr size_t kBufferSize = 4u << 20;
}

OutputFile::OutputFile(std::filesystem::path path)
    : path_(std::move(path)), fd_(::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) {
    if (fd_.get() < 0) failErrno("cannot create " + path_.string());
    buffer_.reserve(kBufferSize);
}

void OutputFile::write(std::span<const uint8_t> data) {
    offset_ += data.size();
    while (!data.empty()) {
        size_t room = kBufferSize - buffer_.size();
        size_t n = std::min(room, data.size());
        buffer_.insert(buffer_.end(), data.begin(), data.begin() + static_cast<ptrdiff_t>(n));
        data = data.subspan(n);
        if (buffer_.size() == kBufferSize) flush();
    }
}

void OutputFile::writeZeros(uint64_t count) {
    static const std::vector<uint8_t> zeros(64 * 1024);
    while (count > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(count, zeros.size()));
        write({zeros.data(), n});
        count -= n;
    }
}

void OutputFile::flush() {
    writeAll(fd_.get(), buffer_, path_.string());
    buffer_.clear();
}

void OutputFile::commit() {
    flush();
    if (::fsync(fd_.get()) != 0) failErrno("syncing " + path_.string());
    fd_.close(path_.string());
}

}  // namespace rafs::build
