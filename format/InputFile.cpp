#include "format/InputFile.h"
#include "format/FileIo.h"

#include "format/ByteView.h"
#include "format/Error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace rafs {

InputFile::InputFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) failErrno(path_);
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
        int err = errno;
        ::close(fd_);
        failErrno(path_, err);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd_);
        fail("{}: not a regular file", path_);
    }
    size_ = static_cast<uint64_t>(st.st_size);
}

InputFile::~InputFile() {
    if (fd_ >= 0) ::close(fd_);  // read-only: nothing to lose on a failed close
}

InputFile::InputFile(InputFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

InputFile& InputFile::operator=(InputFile&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        path_ = std::move(other.path_);
        fd_ = std::exchange(other.fd_, -1);
        size_ = other.size_;
    }
    return *this;
}

void InputFile::readAt(uint64_t offset, std::span<uint8_t> out) const {
    if (!inBounds(offset, out.size(), size_)) {
        fail("{}: read of {} bytes at offset {} past the end of the file ({} bytes)", path_,
             out.size(), offset, size_);
    }
    preadExactly(fd_, out, offset, path_);
}

std::vector<uint8_t> InputFile::read(uint64_t offset, uint64_t size) const {
    if (!inBounds(offset, size, size_)) {
        fail("{}: read of {} bytes at offset {} past the end of the file ({} bytes)", path_, size,
             offset, size_);
    }
    std::vector<uint8_t> out(size);
    readAt(offset, out);
    return out;
}

}  // namespace rafs
