#include "daemon/snapshotter/RafsdMounts.h"

#include "daemon/api/ControlClient.h"
#include "daemon/api/MountInfo.h"
#include "daemon/core/Log.h"
#include "format/Error.h"

#include <nlohmann/json.hpp>
#include <sys/mount.h>

#include <cerrno>
#include <chrono>
#include <thread>

namespace rafsd {

namespace {

// Fetching a bootstrap from the registry may take a while; this bounds a hung rafsd.
constexpr std::chrono::seconds kMountTimeout{300};
constexpr std::chrono::seconds kUmountTimeout{60};
constexpr std::chrono::seconds kListTimeout{60};
// How long rafsd may take to start its next worker (the supervisor starts one at once after a
// worker's death, and it binds the control socket once it has taken the mounts over), and how
// often to look.
constexpr std::chrono::seconds kNextWorkerWait{10};
constexpr std::chrono::milliseconds kNextWorkerPoll{200};

}  // namespace

bool RafsdMounts::serves(const std::filesystem::path& dir) const {
    nlohmann::json listed;
    // Nobody listens between two of rafsd's workers (each binds the control socket anew), and when
    // rafsd is gone: a while for the next worker, then it is gone, and nobody serves the mount.
    for (const auto until = std::chrono::steady_clock::now() + kNextWorkerWait;;) {
        try {
            listed = ControlClient(socket_, kListTimeout).call(ListRequest{});
            break;
        } catch (const rafs::SystemError& e) {
            if (e.code() != ECONNREFUSED && e.code() != ENOENT) throw;
            if (std::chrono::steady_clock::now() >= until) {
                log::warn("{}: no rafsd listens on {} ({}): nobody serves it", dir.string(), socket_.string(), e.what());
                return false;
            }
            std::this_thread::sleep_for(kNextWorkerPoll);
        }
    }
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
            // rafsd listens but does not answer (a worker stopped, or busy past the timeout): it
            // lives, and the mount stays in use, as before rafsd could be asked.
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
