// The EROFS mounts of RAFS images that back bootstrap-layer snapshots, made and released by rafsd
// through its control socket (daemon/api/ControlProtocol.h). rafsd keeps serving them when this
// snapshotter exits or dies; the snapshotter only asks for them and gives them back.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace rafsd {

class RafsdMounts {
public:
    explicit RafsdMounts(std::filesystem::path socket) : socket_(std::move(socket)) {}

    // Mounts `image` (HOST/REPO@sha256:...) on `dir` unless rafsd serves an EROFS mount there
    // already (rafsd restarted, or this snapshotter did, and the mount lived on). An EROFS mount
    // there that rafsd, asked, does not serve (its kernel objects died with it) is detached first;
    // while nothing listens on rafsd's socket (for a while) it is left as it is and rafs::Error is
    // thrown: no container may start on it; one rafsd cannot be asked about (it listens, but does
    // not answer) is used as it is; a stale mount rafsd still records for `dir` (after a reboot) is
    // released first. A mount request whose worker died under it is made again to the next one.
    // Throws rafs::Error.
    void ensure(const std::string& image, const std::filesystem::path& dir) const;
    // Asks rafsd to unmount `dir`; when rafsd does not serve it, a leftover EROFS mount there is
    // detached. One rafsd serves but could not unmount (busy) or cannot be asked about stays, and
    // rafs::Error is thrown (the caller tries again later): detached behind rafsd's back, it would
    // stay in rafsd's table, and the forgetting of that record would unmark files the detached
    // mount still reads (holes read as zeros). Throws rafs::Error when the detach fails too.
    void release(const std::filesystem::path& dir) const;

private:
    // Whether rafsd lists a mount on `dir`; nullopt if nothing listened on its socket for a while.
    std::optional<bool> serves(const std::filesystem::path& dir) const;
    // rafsd's list of images (ControlClient waits while its socket refuses connections, between
    // two of its workers); nullopt if nothing listened all that time.
    std::optional<nlohmann::json> listWhenListening() const;

    std::filesystem::path socket_;
};

}  // namespace rafsd
