#include "daemon/engines/fscache/FscacheBootstrap.h"

#include "format/ByteView.h"
#include "format/Error.h"
#include "daemon/engines/fscache/ObjectFd.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace rafsd {

namespace {

constexpr uint64_t kBlock = 4096;

}  // namespace

FscacheBootstrap::FscacheBootstrap(std::span<const uint8_t> bytes)
    : size_(bytes.size()), padded_(rafs::alignUp(bytes.size(), kBlock)) {
    void* raw = nullptr;
    if (int r = ::posix_memalign(&raw, kBlock, padded_); r != 0) rafs::failErrno("posix_memalign", r);
    data_.reset(static_cast<uint8_t*>(raw), std::free);
    std::memcpy(data_.get(), bytes.data(), bytes.size());
    std::memset(data_.get() + bytes.size(), 0, padded_ - bytes.size());
}

void FscacheBootstrap::write(int anon_fd, uint64_t offset, uint64_t length, bool whole, std::string_view what) const {
    uint64_t begin = 0;
    uint64_t end = padded_;
    if (!whole) {
        begin = std::min(offset / kBlock * kBlock, padded_);
        end = std::min(rafs::alignUp(offset + length, kBlock), padded_);
    }
    writeToObject(anon_fd, data_.get() + begin, end - begin, begin, what);
}

}  // namespace rafsd
