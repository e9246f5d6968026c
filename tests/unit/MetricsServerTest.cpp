// The metrics endpoint over a unix socket, as a scraper sees it.
#include "daemon/api/MetricsServer.h"

#include "format/UniqueFd.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace {

// One request on a new connection; the whole reply ("" if the connection could not be made or
// was closed at once).
std::string scrape(const std::string& path, const std::string& request) {
    rafs::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return "";
    if (::write(fd.get(), request.data(), request.size()) != static_cast<ssize_t>(request.size())) return "";
    const timeval timeout{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    std::string reply;
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n <= 0) break;
        reply.append(buffer, static_cast<size_t>(n));
    }
    return reply;
}

}  // namespace

TEST_CASE("metrics endpoint: GET /metrics, 404 and 405, also with over a thousand fds open", "[metrics]") {
    const rafs::test::TempDir dir;
    const std::string path = dir / "metrics.sock";
    rafsd::MetricsServer server("unix:" + path, [] { return std::string("rafsd_up 1\n"); });
    CHECK_THAT(scrape(path, "GET /metrics HTTP/1.0\r\n\r\n"), Catch::Matchers::StartsWith("HTTP/1.1 200") &&
                                                                  Catch::Matchers::EndsWith("rafsd_up 1\n"));
    CHECK_THAT(scrape(path, "GET /other HTTP/1.0\r\n\r\n"), Catch::Matchers::StartsWith("HTTP/1.1 404"));
    CHECK_THAT(scrape(path, "POST /metrics HTTP/1.0\r\n\r\n"), Catch::Matchers::StartsWith("HTTP/1.1 405"));

    // rafsd holds fds by the thousand (cache files, pending fanotify events): a scrape's
    // connection then gets a number past select()'s FD_SETSIZE, and must still be answered.
    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
    if (limit.rlim_max < 2048) {
        WARN("RLIMIT_NOFILE hard limit below 2048: the many-fds part is skipped");
        return;
    }
    const rlimit raised{std::max<rlim_t>(limit.rlim_cur, 2048), limit.rlim_max};
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &raised) == 0);
    std::vector<rafs::UniqueFd> held;
    while (held.size() < 1100) held.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    REQUIRE(held.back().get() >= 1024);
    CHECK_THAT(scrape(path, "GET /metrics HTTP/1.0\r\n\r\n"), Catch::Matchers::StartsWith("HTTP/1.1 200"));
    held.clear();
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
}

// The service and a `rafsd mount` reading the same config name the same endpoint.
TEST_CASE("metrics endpoint: a live one's socket is left alone, a stale one's replaced", "[metrics]") {
    const rafs::test::TempDir dir;
    const std::string path = dir / "metrics.sock";
    const auto render = [] { return std::string("rafsd_up 1\n"); };
    {
        rafsd::MetricsServer first("unix:" + path, render);
        CHECK_THROWS_WITH(rafsd::MetricsServer("unix:" + path, render),
                          "another process is already listening on " + path);
        CHECK_THAT(scrape(path, "GET /metrics HTTP/1.0\r\n\r\n"), Catch::Matchers::StartsWith("HTTP/1.1 200"));
    }
    CHECK(!std::filesystem::exists(path));

    // A file left by a rafsd that died is replaced; a server whose file was replaced meanwhile
    // leaves the new one in place when it stops.
    {
        rafs::UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        REQUIRE(::bind(stale.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    }
    auto replaced = std::make_unique<rafsd::MetricsServer>("unix:" + path, render);
    CHECK_THAT(scrape(path, "GET /metrics HTTP/1.0\r\n\r\n"), Catch::Matchers::StartsWith("HTTP/1.1 200"));
    std::filesystem::remove(path);
    rafsd::MetricsServer successor("unix:" + path, render);
    replaced.reset();
    CHECK_THAT(scrape(path, "GET /metrics HTTP/1.0\r\n\r\n"), Catch::Matchers::StartsWith("HTTP/1.1 200"));
}
