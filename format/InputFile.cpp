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

InputFile::InputFile(std::string path) : path_(std::move(path)), fd_(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_.get() < 0) failErrno(path_);
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) failErrno(path_);
    if (!S_ISREG(st.st_mode)) fail("{}: not a regular file", path_);
    size_ = static_cast<uint64_t>(st.st_size);
}

void InputFile::readAt(uint64_t offset, std::span<uint8_t> out) const {
    if (!inBounds(offset, out.size(), size_)) {
        fail("{}: read of {} bytes at offset {} past the end of the file ({} bytes)", path_,
             out.size(), offset, size_);
    }
    preadExactly(fd_.get(), out, offset, path_);
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
