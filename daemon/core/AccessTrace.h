// The order in which an image's chunks were first asked for after its mount: the start-up
// sequence of what runs on it. `rafsctl trace` turns it into file paths, which `mkrafs
// --prefetch-list` writes into an image's prefetch table, so other hosts fetch in that order.
#pragma once

#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace rafsd {

class AccessTrace {
public:
    // `chunk_counts`: per blob of the image, its number of chunks.
    explicit AccessTrace(const std::vector<uint32_t>& chunk_counts);

    // Chunks [first, end) of blob `blob` were asked for; those seen before are not added again.
    // Thread-safe.
    void record(uint32_t blob, uint32_t first, uint32_t end);
    // (blob, ci) in first-access order.
    std::vector<std::pair<uint32_t, uint32_t>> order() const;

private:
    mutable std::mutex mutex_;
    std::vector<std::vector<bool>> seen_;
    std::vector<std::pair<uint32_t, uint32_t>> order_;
};

}  // namespace rafsd
