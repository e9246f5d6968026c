#include "daemon/api/LocalBootstrap.h"

#include "format/Digest.h"
#include "format/FileIo.h"
#include "daemon/core/DurableFile.h"

#include <algorithm>
#include <string>

namespace rafsd {

namespace fs = std::filesystem;

fs::path extractBootstrap(const rafs::Bootstrap& bootstrap, const fs::path& cache_dir) {
    const fs::path path =
        cache_dir / (rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bootstrap.bytes())) + ".boot");
    // Reused only if it holds the bootstrap: a file damaged under this name is written again.
    if (fs::exists(path)) {
        const std::string kept = rafs::readFile(path.string(), bootstrap.bytes().size() + 1);
        if (std::equal(kept.begin(), kept.end(), bootstrap.bytes().begin(), bootstrap.bytes().end())) return path;
    }
    replaceFileSynced(path, bootstrap.bytes());
    return path;
}

}  // namespace rafsd
