#include "daemon/core/ChunkUse.h"

#include <algorithm>
#include <chrono>

namespace rafsd {

uint32_t ChunkUse::now() {
    static const auto start = std::chrono::steady_clock::now();
    const auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start);
    return static_cast<uint32_t>(elapsed.count()) + 1;
}

void ChunkUse::touch(uint32_t first, uint32_t end) {
    const uint32_t stamp = now();
    for (uint32_t ci = first; ci < std::min(end, count_); ++ci) stamps_[ci].store(stamp, std::memory_order_relaxed);
}

}  // namespace rafsd
