#include "daemon/api/ControlClient.h"

#include "format/Error.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace rafsd {
namespace {

using Clock = std::chrono::steady_clock;

// How long the supervisor may take to have the next worker listen after a worker's death or a
// reload (it takes the mounts over first), and how often to look.
constexpr std::chrono::seconds kNextWorkerWait{10};
constexpr std::chrono::milliseconds kNextWorkerPoll{200};

// One exchange on a connected socket, all of it before one deadline.
class Exchange {
public:
    Exchange(int fd, const std::filesystem::path& socket, std::chrono::milliseconds timeout)
        : fd_(fd), socket_(socket), timeout_(timeout), deadline_(Clock::now() + timeout) {}

    void send(std::string_view data) {
        while (!data.empty()) {
            ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                wait(POLLOUT);
                continue;
            }
            // rafsd turned the connection away (and closed it) before the request was sent: why
            // is on the socket, for receiveLine().
            if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return;
            if (n < 0) rafs::failErrno(fmt::format("cannot send to {}", socket_.string()));
            data.remove_prefix(static_cast<size_t>(n));
        }
    }

    std::string receiveLine() {
        std::string line;
        char chunk[65536];
        for (;;) {
            ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                wait(POLLIN);
                continue;
            }
            if (n < 0) rafs::failErrno(fmt::format("cannot read from {}", socket_.string()));
            if (n == 0) {
                throw rafs::SystemError(
                    fmt::format("rafsd closed the connection on {} without a response", socket_.string()), ECONNRESET);
            }
            std::string_view got(chunk, static_cast<size_t>(n));
            // One request gets one line back: anything after its newline is not ours to read.
            if (auto end = got.find('\n'); end != std::string_view::npos) return line.append(got.substr(0, end));
            line.append(got);
            if (line.size() > kMaxResponseBytes) {
                rafs::fail("response from rafsd on {} is longer than {} bytes", socket_.string(), kMaxResponseBytes);
            }
        }
    }

private:
    void wait(short events) {
        for (;;) {
            auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
            pollfd fd = {fd_, events, 0};
            int ready = left > 0 ? ::poll(&fd, 1, static_cast<int>(left)) : 0;
            if (ready > 0) return;
            if (ready == 0) {
                rafs::fail("no response from rafsd on {} within {}s", socket_.string(),
                           static_cast<double>(timeout_.count()) / 1000.0);
            }
            if (errno != EINTR) rafs::failErrno("poll");
        }
    }

    int fd_;
    const std::filesystem::path& socket_;
    std::chrono::milliseconds timeout_;
    Clock::time_point deadline_;
};

}  // namespace

ControlClient::ControlClient(std::filesystem::path socket, std::chrono::milliseconds timeout, WaitForWorker wait)
    : socket_(std::move(socket)), timeout_(timeout), wait_(wait) {}

nlohmann::json ControlClient::call(const Request& request) const {
    sockaddr_un address = unixAddress(socket_);
    rafs::UniqueFd fd;
    // connect() waits while rafsd's backlog is full; SO_SNDTIMEO bounds that wait.
    const auto seconds = std::chrono::floor<std::chrono::seconds>(timeout_);
    const timeval limit{seconds.count(), std::chrono::microseconds(timeout_ - seconds).count()};
    const auto until = Clock::now() + std::min<std::chrono::milliseconds>(kNextWorkerWait, timeout_);
    for (;;) {
        fd = rafs::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (fd.get() < 0) rafs::failErrno("cannot create a unix socket");
        if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) != 0) {
            rafs::failErrno("setsockopt(SO_SNDTIMEO)");
        }
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) break;
        const int err = errno;
        const bool between_workers = (err == ECONNREFUSED && wait_ != WaitForWorker::No) ||
                                     (err == ENOENT && wait_ == WaitForWorker::WhileRefusedOrAbsent);
        if (between_workers && Clock::now() < until) {
            std::this_thread::sleep_for(kNextWorkerPoll);
            continue;
        }
        const bool absent = err == ENOENT || err == ECONNREFUSED;
        throw rafs::SystemError(fmt::format("cannot connect to {}: {}{}", socket_.string(), std::strerror(err),
                                            absent ? " (is rafsd serve running?)" : ""),
                                err);
    }
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) rafs::failErrno("fcntl(F_SETFL)");

    Exchange exchange(fd.get(), socket_, timeout_);
    exchange.send(formatRequest(request) + "\n");
    return parseResponse(exchange.receiveLine());
}

}  // namespace rafsd
