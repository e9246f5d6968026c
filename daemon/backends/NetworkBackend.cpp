#include "daemon/backends/NetworkBackend.h"

#include "daemon/core/Log.h"

namespace rafsd {

void NetworkBackend::warnIfRangesIgnored() {
    if (stats().whole_blob_answers.load(std::memory_order_relaxed) == 0) return;
    if (warned_ranges_ignored_.exchange(true)) return;
    log::warn("{}: the server ignores Range and answers with whole blobs: every read downloads its blob from the "
              "start; serve the blobs from a server that honours Range (nginx, a registry)",
              describe());
}

}  // namespace rafsd
