// A backend that reads blobs over the network (http, registry): a Backend with transfer counters
// for `rafsctl status`.
#pragma once

#include "daemon/backends/Backend.h"
#include "registry/TransferStats.h"

namespace rafsd {

class NetworkBackend : public Backend {
public:
    virtual registry::TransferStats& stats() = 0;
};

}  // namespace rafsd
