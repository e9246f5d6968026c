#include "daemon/engines/fscache/CookieTable.h"

#include "format/Error.h"

#include <algorithm>

namespace rafsd {

void CookieTable::add(uint32_t image, const std::filesystem::path& mountpoint, const std::string& volume,
                      const std::string& fsid, std::span<const uint8_t> bootstrap,
                      const std::vector<BlobCookie>& blobs) {
    if (hasMount(mountpoint)) rafs::fail("{} is already mounted by the fscache engine", mountpoint.string());
    const Key boot{volume, fsid};
    if (cookies_.count(boot) != 0) rafs::fail("fsid '{}' is already in use in volume '{}'", fsid, volume);
    // Every check before the first insertion: a refused mount must leave no cookie behind.
    for (const BlobCookie& b : blobs) {
        auto it = cookies_.find(Key{volume, b.cookie});
        if (it != cookies_.end() && it->second.blob && it->second.blob != b.fd) {
            rafs::fail("blob '{}' in volume '{}' is another blob's", b.cookie, volume);
        }
    }
    auto copy = std::make_shared<const FscacheBootstrap>(bootstrap);
    Mount entry{image, mountpoint, {}};
    Cookie& c = cookies_[boot];
    c.bootstrap = std::move(copy);
    c.users.emplace_back(image, 0);
    entry.cookies.push_back(boot);
    for (const BlobCookie& b : blobs) {
        const Key key{volume, b.cookie};
        Cookie& blob = cookies_[key];
        blob.blob = b.fd;
        blob.blob_size = b.size;
        blob.users.emplace_back(image, b.blob);
        entry.cookies.push_back(key);
    }
    refused_.clear();
    mounts_.push_back(std::move(entry));
}

bool CookieTable::remove(const std::filesystem::path& mountpoint) {
    auto m = std::find_if(mounts_.begin(), mounts_.end(), [&](const Mount& e) { return e.mountpoint == mountpoint; });
    if (m == mounts_.end()) return false;
    for (const Key& key : m->cookies) {
        auto it = cookies_.find(key);
        if (it == cookies_.end()) continue;
        auto& users = it->second.users;
        std::erase_if(users, [&](const auto& u) { return u.first == m->image; });
        if (users.empty()) cookies_.erase(it);
    }
    mounts_.erase(m);
    return true;
}

bool CookieTable::hasMount(const std::filesystem::path& mountpoint) const {
    return std::any_of(mounts_.begin(), mounts_.end(), [&](const Mount& e) { return e.mountpoint == mountpoint; });
}

std::vector<std::filesystem::path> CookieTable::mountpoints() const {
    std::vector<std::filesystem::path> out;
    for (const Mount& m : mounts_) out.push_back(m.mountpoint);
    return out;
}

const CookieTable::Cookie* CookieTable::find(const Key& key) const {
    auto it = cookies_.find(key);
    return it == cookies_.end() || it->second.users.empty() ? nullptr : &it->second;
}

void CookieTable::clear() {
    cookies_.clear();
    mounts_.clear();
    refused_.clear();
}

}  // namespace rafsd
