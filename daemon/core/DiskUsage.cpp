#include "daemon/core/DiskUsage.h"

#include "daemon/core/Log.h"

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
        if (::lstat(it->path().c_str(), &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            usage.directory_bytes += uint64_t(st.st_blocks) * 512;
            continue;
        }
        usage.bytes += uint64_t(st.st_blocks) * 512;
        usage.last_write = std::max<int64_t>(usage.last_write, st.st_mtim.tv_sec);
    }
    return usage;
}

void renewLastUse(const fs::path& path) {
    std::error_code ec;
    fs::last_write_time(path, fs::file_time_type::clock::now(), ec);
    if (ec) log::warn("{}: cannot renew its time of last use: {}", path.string(), ec.message());
}

}  // namespace rafsd
