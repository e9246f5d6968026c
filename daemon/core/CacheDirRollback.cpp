#include "daemon/core/CacheDirRollback.h"

#include "format/Error.h"

#include <system_error>
#include <vector>

namespace rafsd {

namespace fs = std::filesystem;

CacheDirRollback::CacheDirRollback(fs::path dir) : dir_(std::move(dir)) {
    std::error_code ec;
    fs::path missing;  // the topmost ancestor of dir_ (or dir_ itself) that does not exist yet
    for (fs::path p = dir_; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
        missing = p;
        if (p == p.parent_path()) break;
    }
    fs::create_directories(dir_, ec);
    if (ec) rafs::fail("cannot create cache dir {}: {}", dir_.string(), ec.message());
    created_ = missing;
    if (!created_.empty()) return;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        before_.insert(it->path().filename().string());
    }
    if (ec) rafs::fail("cannot list cache dir {}: {}", dir_.string(), ec.message());
}

CacheDirRollback::~CacheDirRollback() {
    if (committed_) return;
    std::error_code ignored;
    if (!created_.empty()) {
        fs::remove_all(created_, ignored);
        return;
    }
    std::vector<fs::path> added;
    for (fs::directory_iterator it(dir_, ignored), end; !ignored && it != end; it.increment(ignored)) {
        if (before_.count(it->path().filename().string()) == 0) added.push_back(it->path());
    }
    for (const fs::path& p : added) fs::remove_all(p, ignored);
}

}  // namespace rafsd
