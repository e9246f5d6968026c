// A backend that reads blobs over the network (http, registry): a Backend with transfer counters
// for `rafsctl status` and /metrics.
#pragma once

#include "daemon/backends/Backend.h"
#include "registry/TransferStats.h"

#include <atomic>

namespace rafsd {

class NetworkBackend : public Backend {
public:
    virtual registry::TransferStats& stats() = 0;

protected:
    // After a read: the first time the server answered a range with the whole blob, one warning,
    // since every read of such a server downloads its blob from the start (quadratic in the blob).
    void warnIfRangesIgnored();

private:
    std::atomic<bool> warned_ranges_ignored_{false};
};

}  // namespace rafsd
