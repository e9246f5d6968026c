// Answers GET /metrics over HTTP (libmicrohttpd, its own thread) on a unix socket or a TCP address,
// with the text a callback renders at each scrape. Any other path is 404, any other method 405.
#pragma once

#include "daemon/api/UnixListener.h"

#include <functional>
#include <memory>
#include <string>

struct MHD_Daemon;

namespace rafsd {

class MetricsServer {
public:
    // `address` as Config::Metrics validated it. Throws rafs::Error naming the address when it
    // cannot be bound.
    MetricsServer(const std::string& address, std::function<std::string()> render);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    std::string render() const { return render_(); }

private:
    std::function<std::string()> render_;
    UnixListener unix_socket_;  // its file, for a unix endpoint
    MHD_Daemon* daemon_ = nullptr;
};

}  // namespace rafsd
