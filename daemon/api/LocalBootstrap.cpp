#include "daemon/api/LocalBootstrap.h"

#include "format/Digest.h"
#include "format/Error.h"
#include "format/FileIo.h"
#include "daemon/core/DurableFile.h"

#include <algorithm>
#include <cstdio>
#include <string>

namespace rafsd {

namespace fs = std::filesystem;

fs::path extractBootstrap(const rafs::Bootstrap& bootstrap, const fs::path& cache_dir) {
    const fs::path path =
        cache_dir / (rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bootstrap.bytes())) + ".boot");
    // Reused only if whole: written without fsync, a file under this name may be torn by a crash.
    if (fs::exists(path)) {
        const std::string kept = rafs::readFile(path.string(), bootstrap.bytes().size() + 1);
        if (std::equal(kept.begin(), kept.end(), bootstrap.bytes().begin(), bootstrap.bytes().end())) return path;
    }
    const fs::path temp = path.string() + ".tmp";
    writeFileUnsynced(temp, bootstrap.bytes());
    if (::rename(temp.c_str(), path.c_str()) != 0) rafs::failErrno("cannot rename " + temp.string());
    return path;
}

}  // namespace rafsd
