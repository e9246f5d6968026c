#include "registry/HttpBlobClient.h"
#include "registry/HttpTransport.h"
#include "registry/RetryingTransport.h"
#include "registry/TransferStats.h"

#include "format/UniqueFd.h"

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace registry;

namespace {

// One connection on 127.0.0.1 that answers a range GET with a 206 whose body comes in two
// halves: the second only once the test says so (or after kPatience), so the test can tell
// whether the client used the first half while the transfer was still going on.
class TwoHalvesServer {
public:
    static constexpr auto kPatience = std::chrono::seconds(10);

    explicit TwoHalvesServer(std::vector<uint8_t> body) : body_(std::move(body)) {
        listener_ = rafs::UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(listener_.get() >= 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
        REQUIRE(::listen(listener_.get(), 1) == 0);
        socklen_t length = sizeof address;
        REQUIRE(::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
        port_ = ntohs(address.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~TwoHalvesServer() {
        release();
        thread_.join();
    }

    uint16_t port() const { return port_; }
    // Lets the second half go.
    void release() {
        std::lock_guard lock(mutex_);
        released_ = true;
        changed_.notify_all();
    }
    // Whether release() came before the server gave up waiting for it.
    bool releasedInTime() {
        std::lock_guard lock(mutex_);
        return released_in_time_;
    }

private:
    void sendAll(int fd, const void* data, size_t size) {
        const auto* p = static_cast<const uint8_t*>(data);
        while (size > 0) {
            const ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
            if (n <= 0) return;
            p += n;
            size -= static_cast<size_t>(n);
        }
    }

    void serve() {
        // Bounded: a client that never connects (it failed first) leaves no thread to join forever.
        pollfd ready{listener_.get(), POLLIN, 0};
        if (::poll(&ready, 1, static_cast<int>(std::chrono::milliseconds(kPatience).count())) != 1) return;
        const rafs::UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (fd.get() < 0) return;
        std::string request;
        char buffer[4096];
        while (request.find("\r\n\r\n") == std::string::npos) {
            const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
            if (n <= 0) return;
            request.append(buffer, static_cast<size_t>(n));
        }
        const std::string head = fmt::format(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-{}/{}\r\nContent-Length: {}\r\n\r\n",
            body_.size() - 1, body_.size(), body_.size());
        sendAll(fd.get(), head.data(), head.size());
        const size_t half = body_.size() / 2;
        sendAll(fd.get(), body_.data(), half);
        {
            std::unique_lock lock(mutex_);
            released_in_time_ = changed_.wait_for(lock, kPatience, [this] { return released_; });
        }
        sendAll(fd.get(), body_.data() + half, body_.size() - half);
    }

    std::vector<uint8_t> body_;
    rafs::UniqueFd listener_;
    uint16_t port_ = 0;
    std::mutex mutex_;
    std::condition_variable changed_;
    bool released_ = false;
    bool released_in_time_ = false;
    std::thread thread_;
};

}  // namespace

// The streaming decode counts on it (ChunkFetcher): the thread waiting in perform() is woken with
// the bytes that arrived, while the rest of the body is still to come, through libcurl and a
// real socket.
TEST_CASE("a followed range read hands its caller the first half before the second is sent", "[http]") {
    std::vector<uint8_t> body(256 << 10);
    for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<uint8_t>(i * 131 + 7);
    TwoHalvesServer server(body);
    auto transport = std::make_shared<RetryingTransport>(
        std::make_shared<HttpTransport>(TransportOptions{}, std::make_shared<TlsConfig>(std::map<std::string, HostTlsFiles>{}, "")),
        RetryPolicy(RetryOptions{.retries = 0}), "", std::chrono::milliseconds(0), std::make_shared<TransferStats>());
    HttpBlobClient client(fmt::format("http://127.0.0.1:{}", server.port()), transport);

    const size_t half = body.size() / 2;
    const auto caller = std::this_thread::get_id();
    std::vector<uint8_t> out(body.size());
    bool on_caller_thread = true;
    bool half_matched = false;
    client.readBlob("blob", 0, out, [&](size_t filled) -> size_t {
        on_caller_thread = on_caller_thread && std::this_thread::get_id() == caller;
        if (filled < half) return half;
        if (filled < body.size()) {
            half_matched = std::memcmp(out.data(), body.data(), half) == 0;
            server.release();
        }
        return SIZE_MAX;
    });
    CHECK(server.releasedInTime());
    CHECK(half_matched);
    CHECK(on_caller_thread);
    CHECK(out == body);
}

// libcurl blames the server for a socket this process could not open: the message must not.
TEST_CASE("a connection without a free fd says so, not that the server is down", "[http]") {
    HttpTransport transport(TransportOptions{}, std::make_shared<TlsConfig>(std::map<std::string, HostTlsFiles>{}, ""));
    // The lowest free fd number as the limit: no fd can be opened until it is raised again.
    const int lowest = ::dup(0);
    REQUIRE(lowest >= 0);
    ::close(lowest);
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    const rlimit low{static_cast<rlim_t>(lowest), old.rlim_max};
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    HttpRequest request;
    request.url = "http://127.0.0.1:9/x";
    const HttpResponse response = transport.perform(request);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK(response.curl_code != 0);
    CHECK_THAT(response.curl_error, Catch::Contains("this process cannot open a socket: Too many open files"));
}

// A registry's plain_http set the wrong way round gets OpenSSL's or the server's words alone,
// which do not point at the setting.
TEST_CASE("http: a plain HTTP server addressed with https, and the other way round, are named", "[http]") {
    HttpResponse tls_to_plain;
    tls_to_plain.curl_code = CURLE_SSL_CONNECT_ERROR;
    tls_to_plain.curl_error = "OpenSSL/3.0.19: error:0A00010B:SSL routines::wrong version number";
    CHECK(tls_to_plain.summary() == "OpenSSL/3.0.19: error:0A00010B:SSL routines::wrong version number (the server "
                                    "answered in plain HTTP: plain HTTP is plain_http in rafsd's [backend.hosts] and "
                                    "--plain-http for mkrafs)");
    HttpResponse plain_to_tls;
    plain_to_tls.status = 400;
    plain_to_tls.text = "Client sent an HTTP request to an HTTPS server.\n";
    CHECK(plain_to_tls.summary() == "HTTP 400 (the server wants HTTPS, and the request was plain HTTP: plain HTTP is "
                                    "plain_http in rafsd's [backend.hosts] and --plain-http for mkrafs)");
    HttpResponse head_to_tls;  // no body read, and Go's reply has no headers
    head_to_tls.status = 400;
    CHECK(head_to_tls.summary() == "HTTP 400 with no headers, as a TLS server answers a plain HTTP request (plain "
                                   "HTTP is plain_http in rafsd's [backend.hosts] and --plain-http for mkrafs)");
    HttpResponse other;
    other.status = 400;
    other.headers = {{"content-type", "text/plain"}};
    other.text = "Bad Request";
    CHECK(other.summary() == "HTTP 400");
}
