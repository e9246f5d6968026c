#include "daemon/api/ControlServer.h"

#include "daemon/api/UnixListener.h"

#include "format/Error.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <thread>

namespace rafsd {
namespace {

using nlohmann::json;

struct Connection {
    rafs::UniqueFd fd;
    std::thread thread;
    std::atomic<bool> done{false};
};

struct Dispatch {
    ControlHandler& handler;
    json operator()(const MountRequest& request) const { return handler.mount(request); }
    json operator()(const UmountRequest& request) const { return handler.umount(request); }
    json operator()(const ListRequest&) const { return handler.list(); }
    json operator()(const StatusRequest& request) const { return handler.status(request); }
    json operator()(const TraceRequest& request) const { return handler.trace(request); }
    json operator()(const GcRequest& request) const { return handler.gc(request); }
    json operator()(const ResolveRequest& request) const { return handler.resolve(request); }
};

}  // namespace

struct ControlServer::State {
    State(UnixListener listener, ControlHandler& h) : handler(h), listen(std::move(listener)) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) rafs::failErrno("cannot create a pipe");
        wake = rafs::UniqueFd(fds[0]);
        wakeWriter = rafs::UniqueFd(fds[1]);
        acceptThread = std::thread([this] { acceptLoop(); });
    }

    enum class Wait { Ready, Stopped, TimedOut };
    // How often a server with every place taken looks for one that ended.
    static constexpr int kFullPollMs = 20;

    // Waits until `fd` is ready for `events`, at most `timeout` (negative: no limit).
    Wait waitFor(int fd, short events, std::chrono::milliseconds timeout = std::chrono::milliseconds(-1)) const {
        pollfd fds[2] = {{fd, events, 0}, {wake.get(), POLLIN, 0}};
        int n = 0;
        while ((n = ::poll(fds, 2, static_cast<int>(timeout.count()))) < 0) {
            if (errno != EINTR) rafs::failErrno("poll");
        }
        if (fds[1].revents != 0) return Wait::Stopped;
        return n == 0 ? Wait::TimedOut : Wait::Ready;
    }

    // Sleeps for `ms` or until stop(); false once stop() was called.
    bool pause(int ms) const {
        pollfd fd = {wake.get(), POLLIN, 0};
        return ::poll(&fd, 1, ms) <= 0;
    }

    void acceptLoop() {
        for (;;) {
            try {
                if (!acceptOne()) return;
            } catch (const std::exception&) {
                // poll() out of memory: the server must outlive it.
                if (!pause(100)) return;
            }
        }
    }

    // Waits for one connection and starts its thread; false once stop() was called.
    bool acceptOne() {
        // Every place taken: further clients wait in the listen backlog (connect() blocks once it
        // is full, up to the client's timeout) until one ends, rather than be turned away.
        for (reap(); connections.size() >= kMaxConnections; reap()) {
            if (!pause(kFullPollMs)) return false;
        }
        if (waitFor(listen.fd(), POLLIN) == Wait::Stopped) return false;
        rafs::UniqueFd fd(::accept4(listen.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (fd.get() < 0) {
            // Out of fds or memory leaves the socket readable: wait rather than spin. A client
            // that gave up (ECONNABORTED) or a spurious wakeup needs nothing.
            return errno == EAGAIN || errno == EINTR || errno == ECONNABORTED || pause(100);
        }
        // Whoever may mount may put any file system anywhere: root only (or this process's user),
        // also when an activated socket's mode lets others connect (a .socket unit's default 0666).
        ucred peer{};
        socklen_t length = sizeof peer;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
            refuse(fd, fmt::format("rafsd cannot tell who connected: {}", std::strerror(errno)));
            return true;
        }
        if (peer.uid != 0 && peer.uid != ::geteuid()) {
            refuse(fd, fmt::format("rafsd takes requests from root only, not from uid {}", peer.uid));
            return true;
        }
        Connection& connection = connections.emplace_back();
        connection.fd = std::move(fd);
        try {
            connection.thread = std::thread([this, &connection] { serve(connection); });
        } catch (const std::system_error& e) {
            refuse(connection.fd, fmt::format("rafsd cannot start a thread: {}", e.what()));
            connections.pop_back();
        }
        return true;
    }

    // Best effort: the client is turned away whether or not it gets to read why.
    static void refuse(const rafs::UniqueFd& fd, std::string_view message) {
        std::string line = errorResponse(message) + "\n";
        (void)::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL);
    }

    void reap() {
        std::erase_if(connections, [](Connection& c) {
            if (!c.done) return false;
            c.thread.join();
            return true;
        });
    }

    void serve(Connection& connection) {
        try {
            serveLines(connection.fd.get());
        } catch (const std::exception&) {
            // poll failed or the response could not be built: drop this client, keep serving.
        }
        connection.fd = rafs::UniqueFd();
        connection.done = true;
    }

    void serveLines(int fd) {
        std::string buffer;
        size_t scanned = 0;  // bytes of buffer known to hold no newline
        char chunk[65536];
        const std::chrono::milliseconds timeout = idleTimeout.load();
        // For each request line as a whole, not each read: a client trickling a byte at a time
        // would otherwise hold its place for good.
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const Wait wait = waitFor(fd, POLLIN, left(deadline));
            if (wait == Wait::Stopped) return;
            if (wait == Wait::TimedOut) {
                send(fd, errorResponse(fmt::format("no complete request for {:g} s; rafsd closes this connection",
                                                   std::chrono::duration<double>(timeout).count())),
                     timeout);
                return;
            }
            // Never read past the longest line allowed plus its newline: the buffer stays bounded.
            size_t room = std::min(sizeof chunk, kMaxRequestBytes + 1 - buffer.size());
            ssize_t n = ::recv(fd, chunk, room, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (n < 0) return;  // reset by the client: nobody to answer
            if (n == 0) {
                // A last request without its newline is still answered.
                if (!buffer.empty()) send(fd, respond(buffer), timeout);
                return;
            }
            buffer.append(chunk, static_cast<size_t>(n));
            size_t start = 0;
            for (size_t end; (end = buffer.find('\n', scanned)) != std::string::npos; start = scanned = end + 1) {
                if (peerClosed(fd)) return;
                if (!send(fd, respond(std::string_view(buffer).substr(start, end - start)), timeout)) return;
                deadline = std::chrono::steady_clock::now() + timeout;
            }
            buffer.erase(0, start);
            scanned = buffer.size();
            if (buffer.size() > kMaxRequestBytes) {
                send(fd, errorResponse(fmt::format("request line longer than {} bytes", kMaxRequestBytes)), timeout);
                return;
            }
        }
    }

    // Whether the client closed its end (not only its writing half, as a client whose last request
    // has no newline may: unix_poll reports POLLHUP only when both are shut). A client that gave up
    // while it waited for a place must not have its request carried out unseen: a mount it was
    // told timed out would appear later.
    static bool peerClosed(int fd) {
        pollfd probe = {fd, 0, 0};
        return ::poll(&probe, 1, 0) == 1 && (probe.revents & POLLHUP) != 0;
    }

    std::string respond(std::string_view line) {
        try {
            return okResponse(std::visit(Dispatch{handler}, parseRequest(line)));
        } catch (const std::exception& e) {
            return errorResponse(e.what());
        } catch (...) {
            return errorResponse("internal error: unknown exception");
        }
    }

    // Time left until `deadline`, none if it has passed.
    static std::chrono::milliseconds left(std::chrono::steady_clock::time_point deadline) {
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        return std::max(ms, std::chrono::milliseconds(0));
    }

    // Sends one response line, waiting at most `timeout` for the client to take all of it; false
    // when the client is gone, too slow, or stop() was called.
    bool send(int fd, std::string response, std::chrono::milliseconds timeout) const {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        response += '\n';
        std::string_view rest = response;
        while (!rest.empty()) {
            ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EAGAIN) {
                if (waitFor(fd, POLLOUT, left(deadline)) != Wait::Ready) return false;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return false;
            rest.remove_prefix(static_cast<size_t>(n));
        }
        return true;
    }

    ControlHandler& handler;
    UnixListener listen;
    // stop() closes wakeWriter; every poll of the server also watches `wake`, which then hangs up.
    rafs::UniqueFd wake;
    rafs::UniqueFd wakeWriter;
    bool stopped = false;
    std::atomic<std::chrono::milliseconds> idleTimeout{ControlServer::kIdleTimeout};
    // Only the accept thread touches this, and stop() once that thread has ended.
    std::list<Connection> connections;
    std::thread acceptThread;
};

ControlServer::ControlServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

ControlServer::ControlServer(ControlServer&& other) noexcept = default;

ControlServer& ControlServer::operator=(ControlServer&& other) noexcept {
    if (this != &other) {
        stop();
        state_ = std::move(other.state_);
    }
    return *this;
}

ControlServer::~ControlServer() { stop(); }

void ControlServer::checkFree(const std::filesystem::path& socket) { UnixListener::checkFree(socket); }

ControlServer ControlServer::bind(const std::filesystem::path& socket, ControlHandler& handler) {
    return ControlServer(std::make_unique<State>(UnixListener::bind(socket, 0600, SOCK_NONBLOCK), handler));
}

ControlServer ControlServer::adopt(int listen_fd, ControlHandler& handler) {
    rafs::UniqueFd fd(listen_fd);
    int domain = 0, type = 0, listening = 0;
    socklen_t size = sizeof(int);
    for (auto [option, value] : {std::pair{SO_DOMAIN, &domain}, {SO_TYPE, &type}, {SO_ACCEPTCONN, &listening}}) {
        if (::getsockopt(listen_fd, SOL_SOCKET, option, value, &size) != 0) {
            rafs::failErrno(fmt::format("fd {} is not a listening unix stream socket", listen_fd));
        }
    }
    if (domain != AF_UNIX || type != SOCK_STREAM || listening == 0) {
        rafs::fail("fd {} is not a listening unix stream socket", listen_fd);
    }
    // Inherited fds (systemd's) come without these; the accept loop needs a non-blocking socket.
    int fdFlags = ::fcntl(listen_fd, F_GETFD);
    if (fdFlags < 0 || ::fcntl(listen_fd, F_SETFD, fdFlags | FD_CLOEXEC) != 0) rafs::failErrno("fcntl(F_SETFD)");
    int flags = ::fcntl(listen_fd, F_GETFL);
    if (flags < 0 || ::fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) != 0) rafs::failErrno("fcntl(F_SETFL)");
    return ControlServer(std::make_unique<State>(UnixListener::adopt(std::move(fd)), handler));
}

ControlServer ControlServer::fromSystemdOrPath(const std::filesystem::path& socket, ControlHandler& handler) {
    // The environment stays set: the daemon also reads fds it stored in systemd's fd store.
    int count = sd_listen_fds(0);
    if (count < 0) rafs::failErrno("sd_listen_fds", -count);
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + count; ++fd) {
        int isUnix = sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0);
        if (isUnix < 0) rafs::failErrno(fmt::format("fd {} from systemd", fd), -isUnix);
        if (isUnix > 0) return adopt(fd, handler);
    }
    return bind(socket, handler);
}

void ControlServer::stop(SocketFile file) {
    if (!state_ || state_->stopped) return;
    State& state = *state_;
    state.stopped = true;
    state.wakeWriter = rafs::UniqueFd();
    state.acceptThread.join();
    if (file == SocketFile::Leave) state.listen.closeLeavingFile();
    else state.listen.close();
    for (Connection& connection : state.connections) connection.thread.join();
    state.connections.clear();
}

bool ControlServer::adopted() const { return !state_->listen.bound(); }

bool ControlServer::stopped() const { return !state_ || state_->stopped; }

void ControlServer::setIdleTimeout(std::chrono::milliseconds timeout) { state_->idleTimeout.store(timeout); }

}  // namespace rafsd
