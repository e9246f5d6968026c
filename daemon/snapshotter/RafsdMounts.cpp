#include "daemon/snapshotter/RafsdMounts.h"

#include "daemon/api/ControlClient.h"
#include "daemon/api/MountInfo.h"
#include "daemon/core/Log.h"
#include "format/Error.h"

#include <nlohmann/json.hpp>
#include <sys/mount.h>

#include <cerrno>
#include <chrono>

namespace rafsd {

namespace {

// Fetching a bootstrap from the registry may take a while; this bounds a hung rafsd.
constexpr std::chrono::seconds kMountTimeout{300};
constexpr std::chrono::seconds kUmountTimeout{60};
constexpr std::chrono::seconds kListTimeout{60};

}  // namespace

std::optional<nlohmann::json> RafsdMounts::listWhenListening() const {
    try {
        return ControlClient(socket_, kListTimeout, ControlClient::WaitForWorker::WhileRefusedOrAbsent)
            .call(ListRequest{});
    } catch (const rafs::SystemError& e) {
        if (e.code() != ECONNREFUSED && e.code() != ENOENT) throw;
        log::warn("no rafsd listens on {}: {}", socket_.string(), e.what());
        return std::nullopt;
    }
}

std::optional<bool> RafsdMounts::serves(const std::filesystem::path& dir) const {
    const std::optional<nlohmann::json> listed = listWhenListening();
    if (!listed) return std::nullopt;
    const std::filesystem::path want = std::filesystem::weakly_canonical(dir);
    for (const nlohmann::json& image : listed->at("images")) {
        if (std::filesystem::path(image.at("mountpoint").get<std::string>()) == want) return true;
    }
    return false;
}

void RafsdMounts::ensure(const std::string& image, const std::filesystem::path& dir) const {
    if (erofsMountOn(dir)) {
        std::optional<bool> served = true;
        try {
            served = serves(dir);
        } catch (const rafs::Error& e) {
            // rafsd listens but does not answer (a worker stopped, or busy past the timeout): it
            // lives, and the mount stays in use, as before rafsd could be asked.
            log::warn("{}: cannot ask rafsd whether it serves it ({}); using it as it is", dir.string(), e.what());
        }
        // Nobody listens: rafsd is gone, or its supervisor holds the kernel objects between
        // workers for a while. No container may start on the mount (if gone, its holes read as
        // zeros), and it stays for the next worker to take over.
        if (!served) {
            rafs::fail("{}: no rafsd listens on {} to serve it (is rafsd serve running?)", dir.string(),
                       socket_.string());
        }
        if (*served) return;
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
        // The worker died under the request: its successor takes over whatever it mounted, and
        // is asked again once it listens.
        const auto* system = dynamic_cast<const rafs::SystemError*>(&first);
        const bool lost = system != nullptr && (system->code() == ECONNRESET || system->code() == EPIPE);
        if (lost) listWhenListening();
        // rafsd may still list `dir` from before a reboot, or the dead worker's successor from the
        // request: release that record and try once more.
        try {
            ControlClient(socket_, kUmountTimeout).call(UmountRequest{dir});
        } catch (const rafs::Error&) {
            if (!lost) throw first;
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
        std::optional<bool> served = true;
        try {
            served = serves(dir);
        } catch (const rafs::Error&) {
            // Between two workers: the next one serves it (and can be asked again).
        }
        // Nobody listening (rafsd gone, or between workers) is no answer either.
        if (!served || *served) {
            rafs::fail("rafsd did not unmount {} ({}); it stays mounted until it can", dir.string(), e.what());
        }
        log::warn("rafsd does not serve {} ({}); detaching it", dir.string(), e.what());
    }
    if (::umount2(dir.c_str(), MNT_DETACH) != 0) rafs::failErrno("umount " + dir.string());
}

}  // namespace rafsd
