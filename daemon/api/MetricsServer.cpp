#include "daemon/api/MetricsServer.h"

#include "format/Error.h"
#include "daemon/core/Log.h"

#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace rafsd {

namespace {

constexpr int kBacklog = 16;

rafs::UniqueFd listenTcp(const std::string& address) {
    const size_t colon = address.rfind(':');
    std::string host = address.substr(0, colon);
    const std::string port = address.substr(colon + 1);
    if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
        rafs::fail("metrics endpoint {}: {}", address, ::gai_strerror(rc));
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, ::freeaddrinfo);
    int err = 0;
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
        rafs::UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
        if (fd.get() < 0) {
            err = errno;
            continue;
        }
        const int one = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd.get(), kBacklog) == 0) return fd;
        err = errno;
    }
    rafs::failErrno("cannot bind the metrics endpoint " + address, err);
}

MHD_Result answer(void* cls, MHD_Connection* connection, const char* url, const char* method, const char*,
                  const char*, size_t*, void**) {
    const auto* server = static_cast<const MetricsServer*>(cls);
    unsigned status = MHD_HTTP_OK;
    std::string body;
    if (std::strcmp(method, "GET") != 0 && std::strcmp(method, "HEAD") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = "only GET\n";
    } else if (std::strcmp(url, "/metrics") != 0) {
        status = MHD_HTTP_NOT_FOUND;
        body = "rafsd serves /metrics only\n";
    } else {
        try {
            body = server->render();
        } catch (const std::exception& e) {
            status = MHD_HTTP_INTERNAL_SERVER_ERROR;
            body = std::string(e.what()) + "\n";
        }
    }
    MHD_Response* response = MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
    if (response == nullptr) return MHD_NO;
    MHD_add_response_header(response, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    const MHD_Result queued = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return queued;
}

}  // namespace

MetricsServer::MetricsServer(const std::string& address, std::function<std::string()> render)
    : render_(std::move(render)) {
    rafs::UniqueFd listener;
    if (address.starts_with("unix:")) {
        // Root's, as the control socket is: the metrics name every image mounted.
        unix_socket_ = UnixListener::bind(address.substr(5), 0600, 0);
        listener = unix_socket_.releaseFd();
    } else {
        listener = listenTcp(address);
    }
    // One thread polls; scrapes are rare and small. Not with select() (MHD's default), which drops
    // every connection numbered past FD_SETSIZE, and rafsd holds fds by the thousand (cache
    // files, pending fanotify events). A few connections at once are plenty for scrapers, and
    // bound what idle ones can hold.
    daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, nullptr,
                               nullptr, &answer, this, MHD_OPTION_LISTEN_SOCKET, listener.get(),
                               MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_END);
    if (daemon_ == nullptr) rafs::fail("cannot start the metrics endpoint on {}", address);
    listener.release();  // the daemon closes it
    log::info("metrics on {}", address);
}

MetricsServer::~MetricsServer() {
    MHD_stop_daemon(daemon_);  // closes the listening fd; then unix_socket_ removes its file
}

}  // namespace rafsd
