#include "registry/RequestBody.h"

#include "format/Error.h"

#include <algorithm>
#include <cstring>

namespace registry {

size_t BytesBody::read(std::span<uint8_t> out) {
    const size_t n = std::min(out.size(), bytes_.size() - pos_);
    std::memcpy(out.data(), bytes_.data() + pos_, n);
    pos_ += n;
    return n;
}

FileBody::FileBody(std::filesystem::path path) : path_(std::move(path)), in_(path_, std::ios::binary) {
    if (!in_) rafs::failErrno("cannot open " + path_.string());
    std::error_code ec;
    size_ = std::filesystem::file_size(path_, ec);
    if (ec) rafs::fail("cannot stat {}: {}", path_.string(), ec.message());
}

size_t FileBody::read(std::span<uint8_t> out) {
    in_.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
    if (in_.bad()) rafs::failErrno("reading " + path_.string());
    return static_cast<size_t>(in_.gcount());
}

void FileBody::rewind() {
    in_.clear();
    in_.seekg(0);
    if (!in_) rafs::fail("cannot seek to the start of {}", path_.string());
}

}  // namespace registry
