#include "builder/source/ByteSource.h"

#include "format/Error.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace rafs::build {

FileSource::FileSource(const std::string& input) : name_(input == "-" ? "stdin" : input) {
    if (input == "-") {
        fd_ = STDIN_FILENO;
        return;
    }
    owned_ = UniqueFd(::open(input.c_str(), O_RDONLY | O_CLOEXEC));
    if (owned_.get() < 0) failErrno("cannot open " + input);
    fd_ = owned_.get();
}

size_t FileSource::read(std::span<uint8_t> out) {
    ssize_t n;
    do {
        n = ::read(fd_, out.data(), out.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) failErrno("reading " + name_);
    return static_cast<size_t>(n);
}

}  // namespace rafs::build
