#include "daemon/core/CacheDirRollback.h"

#include "format/Error.h"

#include <system_error>
#include <vector>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

std::set<std::string> entriesOf(const fs::path& dir, std::error_code& ec) {
    std::set<std::string> names;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        names.insert(it->path().filename().string());
    }
    return names;
}

}  // namespace

CacheDirRollback::CacheDirRollback(fs::path dir, std::vector<fs::path> nested) : dir_(std::move(dir)) {
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
    before_[""] = entriesOf(dir_, ec);
    if (ec) rafs::fail("cannot list cache dir {}: {}", dir_.string(), ec.message());
    for (const fs::path& sub : nested) {
        if (!fs::is_directory(dir_ / sub, ec)) continue;  // new, if it comes: removed from the dir above
        before_[sub] = entriesOf(dir_ / sub, ec);
        if (ec) rafs::fail("cannot list {}: {}", (dir_ / sub).string(), ec.message());
    }
}

CacheDirRollback::~CacheDirRollback() {
    if (committed_) return;
    std::error_code ignored;
    if (!created_.empty()) {
        fs::remove_all(created_, ignored);
        return;
    }
    for (const auto& [sub, before] : before_) {
        std::vector<fs::path> added;
        for (fs::directory_iterator it(dir_ / sub, ignored), end; !ignored && it != end; it.increment(ignored)) {
            if (before.count(it->path().filename().string()) == 0) added.push_back(it->path());
        }
        ignored.clear();
        for (const fs::path& p : added) fs::remove_all(p, ignored);
    }
}

}  // namespace rafsd
