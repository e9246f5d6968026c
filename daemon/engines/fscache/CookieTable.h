// The fscache engine's registry of cookies: what each (volume, cookie) the kernel may OPEN is (an
// image's bootstrap, or a blob with the anonymous-fd slot its cache file writes through), which
// images use it, and which mount registered which cookies. Not thread-safe: the engine holds its
// lock around every call.
#pragma once

#include "daemon/engines/fscache/FscacheBootstrap.h"
#include "daemon/engines/fscache/ObjectFd.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace rafsd {

class CookieTable {
public:
    using Key = std::pair<std::string, std::string>;  // volume key, cookie key

    struct Cookie {
        std::shared_ptr<const FscacheBootstrap> bootstrap;  // for the bootstrap's cookie
        std::shared_ptr<ObjectFd> blob;                     // for a blob's cookie
        uint64_t blob_size = 0;
        std::vector<std::pair<uint32_t, uint32_t>> users;  // (image, blob)

        uint64_t size() const { return blob ? blob_size : bootstrap->size(); }
    };

    struct BlobCookie {
        uint32_t blob;
        std::string cookie;
        uint64_t size;
        std::shared_ptr<ObjectFd> fd;
    };

    // Registers an image's cookies in `volume`: its bootstrap under `fsid`, each blob under its
    // cookie (shared with other images of the volume). Throws rafs::Error, registering nothing, if
    // the mountpoint or the fsid is taken or a blob cookie is another blob's.
    void add(uint32_t image, const std::filesystem::path& mountpoint, const std::string& volume,
             const std::string& fsid, std::span<const uint8_t> bootstrap, const std::vector<BlobCookie>& blobs);
    // Drops the image registered for `mountpoint`; false if there is none.
    bool remove(const std::filesystem::path& mountpoint);
    bool hasMount(const std::filesystem::path& mountpoint) const;
    std::vector<std::filesystem::path> mountpoints() const;

    // The cookie, or null if it is not (or no longer) registered.
    const Cookie* find(const Key& key) const;

    // Cookies the kernel asked for that were not registered, since the last add().
    void refuse(const std::string& cookie) { refused_.push_back(cookie); }
    const std::vector<std::string>& refused() const { return refused_; }

    void clear();

private:
    struct Mount {
        uint32_t image;
        std::filesystem::path mountpoint;
        std::vector<Key> cookies;
    };

    std::map<Key, Cookie> cookies_;
    std::vector<Mount> mounts_;
    std::vector<std::string> refused_;
};

}  // namespace rafsd
