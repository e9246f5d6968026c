#include "daemon/core/DiskUsage.h"

#include <sys/stat.h>

#include <algorithm>

namespace rafsd {

namespace fs = std::filesystem;

DiskUsage DiskUsage::of(const fs::path& dir) {
    DiskUsage usage;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
         !ec && it != end; it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0 || S_ISDIR(st.st_mode)) continue;
        usage.bytes += uint64_t(st.st_blocks) * 512;
        usage.last_write = std::max<int64_t>(usage.last_write, st.st_mtim.tv_sec);
    }
    return usage;
}

}  // namespace rafsd
