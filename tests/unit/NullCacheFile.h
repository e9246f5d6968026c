// A cache file that holds no data, for tests that look at what the core decides rather than at
// the bytes it writes.
#pragma once

#include "daemon/core/CacheFile.h"

#include <string>

namespace rafsd::test {

class NullCacheFile : public CacheFile {
public:
    explicit NullCacheFile(uint64_t size) : size_(size) {}
    std::string name() const override { return "null cache file"; }
    uint64_t size() const override { return size_; }
    bool hasData(uint64_t, uint64_t) const override { return true; }
    void sync() override {}

private:
    void writeBlocks(uint64_t, std::span<const uint8_t>) override {}
    uint64_t size_;
};

}  // namespace rafsd::test
