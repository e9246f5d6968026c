// HTTP requests over libcurl for any number of calling threads, each blocking in perform(): one
// multi handle driven by one thread of the transport holds every connection, so connections are
// kept alive and reused by all callers, and requests to a server that offers HTTP/2 share one
// connection (multiplexed streams). Connect / total / low-speed timeouts, per-host TLS
// (TlsConfig), an optional proxy per request. One attempt: retries are RetryingTransport's.
#pragma once

#include "registry/RequestBody.h"
#include "registry/TlsConfig.h"

#include <curl/curl.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace registry {

struct TransportOptions {
    std::chrono::seconds connect_timeout{10};
    std::chrono::seconds timeout{30};  // a whole request; 0: no limit (the low-speed limit still holds)
    uint32_t low_speed_limit = 1024;   // bytes per second; slower for low_speed_time aborts
    std::chrono::seconds low_speed_time{10};
};

struct HttpResponse;

// Where a response body goes, piece by piece, once the status and headers are known.
class BodySink {
public:
    virtual ~BodySink() = default;
    // False stops the transfer (HttpResponse::stopped_by_sink). On the transport's thread.
    virtual bool write(const HttpResponse& head, std::span<const uint8_t> piece) = 0;
    // After write(), on the transport's thread: whether the caller should now use what arrived
    // (arrived()), before the transfer ends.
    virtual bool arrivalWanted() const { return false; }
    // On the thread waiting in perform(), while the transfer goes on, once arrivalWanted() said so
    // (several writes may come before one call): the caller's own work on what arrived, off the
    // thread that drives every transfer.
    virtual void arrived() noexcept {}
};

struct HttpRequest {
    std::string method = "GET";  // GET, HEAD, or with a body PUT, POST, PATCH; DELETE
    std::string url;
    std::vector<std::string> headers;  // "Name: value"
    std::optional<std::pair<uint64_t, uint64_t>> range;  // first, last (inclusive)
    std::string proxy;            // empty: direct
    // Redirects followed by the transport, at most kMaxRedirects, and from https to https only;
    // not for a host with a client certificate or CAs of its own (TlsConfig), which would go with
    // them. Off for registries, whose redirects RegistryClient follows itself (Authorization).
    bool follow_redirects = false;
    static constexpr long kMaxRedirects = 5;
    BodySink* sink = nullptr;     // nullptr: the body goes to HttpResponse::text (capped)
    RequestBody* body = nullptr;  // what PUT, POST and PATCH send; nullptr: nothing
};

struct HttpResponse {
    int curl_code = 0;       // CURLcode; 0 when the exchange completed
    std::string curl_error;  // libcurl's message when curl_code != 0
    long status = 0;         // of the last response; 0 if none arrived
    std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
    std::string text;        // the body without a sink (a longer one stops the transfer: too_large)
    uint64_t body_bytes = 0;
    bool stopped_by_sink = false;
    bool too_large = false;  // no sink, and the body went past kMaxText: the transfer was stopped
    std::chrono::microseconds elapsed{0};

    // Every text a registry or token service sends (manifests: at most 4 MiB by the image spec,
    // about 10 KiB in practice; tokens; error documents) fits; a longer reply is cut off there
    // rather than read to the end of a timeout.
    static constexpr size_t kMaxText = 4 << 20;

    std::optional<std::string_view> header(std::string_view name) const;
    std::vector<std::string_view> headerValues(std::string_view name) const;
    // "HTTP 404 (BLOB_UNKNOWN: blob unknown to registry)" or libcurl's error: for messages.
    std::string summary() const;
};

class HttpTransport {
public:
    HttpTransport(TransportOptions options, std::shared_ptr<const TlsConfig> tls);
    ~HttpTransport();
    HttpTransport(const HttpTransport&) = delete;
    HttpTransport& operator=(const HttpTransport&) = delete;

    // Never throws for network or HTTP errors: they are in the response.
    HttpResponse perform(const HttpRequest& request);

    const TransportOptions& options() const { return options_; }

    struct Transfer;  // one request on its way through the multi handle

private:
    void run();  // the thread that drives the multi handle

    TransportOptions options_;
    std::shared_ptr<const TlsConfig> tls_;
    // libcurl's built-in CA directory, when it has one: searched instead of its CA bundle file.
    bool has_ca_path_ = false;
    CURLM* multi_ = nullptr;
    std::mutex mutex_;
    std::deque<Transfer*> submitted_;  // not yet added to the multi handle
    bool stopping_ = false;
    std::thread thread_;  // last: started when the rest is ready
};

}  // namespace registry
