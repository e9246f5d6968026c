#include "daemon/api/LocalBootstrap.h"

#include "format/Digest.h"
#include "format/Error.h"

#include <cstdio>
#include <fstream>

namespace rafsd {

namespace fs = std::filesystem;

fs::path extractBootstrap(const rafs::Bootstrap& bootstrap, const fs::path& cache_dir) {
    const fs::path path =
        cache_dir / (rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bootstrap.bytes())) + ".boot");
    if (fs::exists(path)) return path;
    const fs::path temp = path.string() + ".tmp";
    {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(bootstrap.bytes().data()),
                  static_cast<std::streamsize>(bootstrap.bytes().size()));
        out.close();
        if (!out) rafs::fail("cannot write the inline bootstrap to {}", temp.string());
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) rafs::failErrno("cannot rename " + temp.string());
    return path;
}

}  // namespace rafsd
