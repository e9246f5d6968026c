// rafsd's side of the control socket: accepts connections on a thread of its own, reads request
// lines (see ControlProtocol.h), and answers each through a ControlHandler. Malformed or oversized
// input gets an error response; nothing a client sends can stop the server.
#pragma once

#include "daemon/api/ControlProtocol.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

namespace rafsd {

// What rafsd does for each request. Each method returns the response's fields (a JSON object, or
// null for none; "ok" is added) or throws, which answers {"ok":false,"error":what()}.
// Called from one thread per connection, so possibly concurrently.
class ControlHandler {
public:
    virtual ~ControlHandler() = default;
    virtual nlohmann::json mount(const MountRequest& request) = 0;
    virtual nlohmann::json umount(const UmountRequest& request) = 0;
    virtual nlohmann::json list() = 0;
    virtual nlohmann::json status(const StatusRequest& request) = 0;
    virtual nlohmann::json trace(const TraceRequest& request) = 0;
    virtual nlohmann::json gc(const GcRequest& request) = 0;
    virtual nlohmann::json resolve(const ResolveRequest& request) = 0;
};

class ControlServer {
public:
    // At most this many connections are served at once; more wait until one ends.
    static constexpr size_t kMaxConnections = 32;
    // A connection that takes longer than this to send a whole request line, or to take a whole
    // response, is closed: a client stuck (or trickling) that way would hold one of the
    // kMaxConnections for good, and its thread.
    static constexpr std::chrono::milliseconds kIdleTimeout{60'000};

    // Listens on `socket`: creates its parent directory (0755) if missing, replaces a stale
    // socket file that nobody listens on, and makes the socket 0600. Throws rafs::Error, e.g.
    // "another process is already listening on /run/rafsd/api.sock".
    static ControlServer bind(const std::filesystem::path& socket, ControlHandler& handler);
    // Throws rafs::Error as bind() does if another process listens on `socket`: checked by a
    // rafsd serve before it touches the state dir another one may be serving from.
    static void checkFree(const std::filesystem::path& socket);
    // Serves an already listening unix stream socket, taking ownership of `listen_fd`.
    static ControlServer adopt(int listen_fd, ControlHandler& handler);
    // Adopts the listening unix stream socket systemd passed (socket activation) if there is
    // one among the passed fds, else binds `socket`.
    static ControlServer fromSystemdOrPath(const std::filesystem::path& socket, ControlHandler& handler);

    ControlServer(ControlServer&& other) noexcept;
    ControlServer& operator=(ControlServer&& other) noexcept;
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;
    ~ControlServer();

    // Stops accepting, closes every connection and waits for their threads; a handler call in
    // progress is waited for. Removes the socket file if bind() created it, unless told to leave it
    // for the next worker (a reload): a client then finds it refusing connections and waits
    // (ControlClient::WaitForWorker) rather than find it absent and give up. Idempotent.
    enum class SocketFile { Remove, Leave };
    void stop(SocketFile file = SocketFile::Remove);
    bool stopped() const;

    // True when the socket came from adopt() or systemd rather than bind().
    bool adopted() const;

    // For tests: kIdleTimeout for connections accepted from now on.
    void setIdleTimeout(std::chrono::milliseconds timeout);

private:
    struct State;
    explicit ControlServer(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace rafsd
