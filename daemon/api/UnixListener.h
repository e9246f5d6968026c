// A listening unix stream socket bound to a path, as the control socket and a unix metrics
// endpoint are. Such a path outlives a rafsd that dies, and two rafsds (the service and a
// `rafsd mount` reading the same config) may name the same one: bind() replaces a socket file
// nobody listens on and refuses one a live process listens on, and the file is removed at the end
// only if it is still the one bind() made. (rafs-snapshotter checks its gRPC socket so too.)
#pragma once

#include "format/UniqueFd.h"

#include <sys/types.h>

#include <filesystem>

namespace rafsd {

class UnixListener {
public:
    // Listens on `path` (a SOCK_STREAM socket with `type_flags` added, e.g. SOCK_NONBLOCK):
    // creates its parent directory (0755) if missing, replaces a stale socket file, and gives the
    // socket `mode` before anyone can connect. Throws rafs::Error, e.g. "another process is already
    // listening on /run/rafsd/api.sock".
    static UnixListener bind(const std::filesystem::path& path, mode_t mode, int type_flags);
    // Throws rafs::Error as bind() does if a process listens on `path`.
    static void checkFree(const std::filesystem::path& path);
    // A listening socket bound elsewhere (systemd's): no file of ours to remove.
    static UnixListener adopt(rafs::UniqueFd fd);

    UnixListener() = default;
    UnixListener(UnixListener&& other) noexcept;
    UnixListener& operator=(UnixListener&& other) noexcept;
    UnixListener(const UnixListener&) = delete;
    UnixListener& operator=(const UnixListener&) = delete;
    ~UnixListener() { close(); }

    int fd() const { return fd_.get(); }
    // Hands the listening fd to its server (which closes it); the file stays this listener's.
    rafs::UniqueFd releaseFd() { return std::move(fd_); }
    // True when bind() made the socket file, false for an adopted socket.
    bool bound() const { return !path_.empty(); }
    // Closes the fd if still held and removes the socket file if it is still ours. Idempotent.
    void close();
    // Closes the fd and leaves the file: clients find it refusing connections (not absent) until
    // the next bind() replaces it as stale, as after a worker that died.
    void closeLeavingFile() {
        path_.clear();
        close();
    }

private:
    rafs::UniqueFd fd_;
    std::filesystem::path path_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

}  // namespace rafsd
