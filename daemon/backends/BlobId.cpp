#include "daemon/backends/BlobId.h"

#include "format/Error.h"

namespace rafsd {

void checkBlobId(const std::string& id) {
    bool ok = id.size() == 64;
    for (char c : id) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (!ok) rafs::fail("invalid blob id '{}'", id);
}

}  // namespace rafsd
