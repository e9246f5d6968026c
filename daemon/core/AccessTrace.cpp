#include "daemon/core/AccessTrace.h"

#include <algorithm>

namespace rafsd {

AccessTrace::AccessTrace(const std::vector<uint32_t>& chunk_counts) {
    for (uint32_t n : chunk_counts) seen_.emplace_back(n, false);
}

void AccessTrace::record(uint32_t blob, uint32_t first, uint32_t end) {
    std::lock_guard lock(mutex_);
    if (blob >= seen_.size()) return;
    std::vector<bool>& seen = seen_[blob];
    for (uint32_t ci = first; ci < std::min<size_t>(end, seen.size()); ++ci) {
        if (seen[ci]) continue;
        seen[ci] = true;
        order_.emplace_back(blob, ci);
    }
}

std::vector<std::pair<uint32_t, uint32_t>> AccessTrace::order() const {
    std::lock_guard lock(mutex_);
    return order_;
}

}  // namespace rafsd
