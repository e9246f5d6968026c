#include "daemon/snapshotter/RafsdMounts.h"

#include "daemon/api/ControlClient.h"
#include "daemon/api/MountInfo.h"
#include "daemon/core/Log.h"
#include "format/Error.h"

#include <nlohmann/json.hpp>
#include <sys/mount.h>

namespace rafsd {

namespace {

// Fetching a bootstrap from the registry may take a while; this bounds a hung rafsd.
constexpr std::chrono::seconds kMountTimeout{300};
constexpr std::chrono::seconds kUmountTimeout{60};
constexpr std::chrono::seconds kListTimeout{60};

}  // namespace

bool RafsdMounts::serves(const std::filesystem::path& dir) const {
    const nlohmann::json listed = ControlClient(socket_, kListTimeout).call(ListRequest{});
    const std::filesystem::path want = std::filesystem::weakly_canonical(dir);
    for (const nlohmann::json& image : listed.at("images")) {
        if (std::filesystem::path(image.at("mountpoint").get<std::string>()) == want) return true;
    }
    return false;
}

void RafsdMounts::ensure(const std::string& image, const std::filesystem::path& dir) const {
    if (erofsMountOn(dir)) {
        bool served = true;
        try {
            served = serves(dir);
        } catch (const rafs::Error& e) {
            // rafsd between two workers (its supervisor keeps the kernel objects, and readers wait
            // for the next): the mount stays in use, as before rafsd could be asked.
            log::warn("{}: cannot ask rafsd whether it serves it ({}); using it as it is", dir.string(), e.what());
        }
        if (served) return;
        // Left by a rafsd whose kernel objects are gone (every holder of its fanotify group died,
        // so what was never fetched reads as holes; or fscache's device closed: EIO), or one whose
        // takeover failed: no container may start on it. Containers still using it keep it.
        log::warn("{}: an EROFS mount rafsd does not serve; detaching it and mounting {} again", dir.string(), image);
        if (::umount2(dir.c_str(), MNT_DETACH) != 0) rafs::failErrno("umount " + dir.string());
    }
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) rafs::fail("cannot create {}: {}", dir.string(), ec.message());
    const ControlClient client(socket_, kMountTimeout);
    MountRequest request;
    request.image = image;
    request.mountpoint = dir;
    try {
        client.call(request);
    } catch (const rafs::Error& first) {
        // rafsd may still list `dir` from before a reboot: release that record and try once more.
        try {
            ControlClient(socket_, kUmountTimeout).call(UmountRequest{dir});
        } catch (const rafs::Error&) {
            throw first;
        }
        client.call(request);
    }
    log::info("mounted {} on {}", image, dir.string());
}

void RafsdMounts::release(const std::filesystem::path& dir) const {
    try {
        ControlClient(socket_, kUmountTimeout).call(UmountRequest{dir});
        log::info("released {}", dir.string());
        return;
    } catch (const rafs::Error& e) {
        if (!erofsMountOn(dir)) return;
        bool served = true;
        try {
            served = serves(dir);
        } catch (const rafs::Error&) {
            // Between two workers: the next one serves it (and can be asked again).
        }
        if (served) rafs::fail("rafsd did not unmount {} ({}); it stays mounted until it can", dir.string(), e.what());
        log::warn("rafsd does not serve {} ({}); detaching it", dir.string(), e.what());
    }
    if (::umount2(dir.c_str(), MNT_DETACH) != 0) rafs::failErrno("umount " + dir.string());
}

}  // namespace rafsd
