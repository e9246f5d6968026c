#include "registry/HttpTransport.h"

#include "format/Error.h"
#include "format/UniqueFd.h"
#include "registry/Url.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace registry {

namespace {

std::string lower(std::string_view text) {
    std::string out(text);
    std::ranges::transform(out, out.begin(), [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
    return out;
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' || text.back() == '\n')) {
        text.remove_suffix(1);
    }
    return text;
}

}  // namespace

struct HttpTransport::Transfer {
    const HttpRequest* request;
    HttpResponse* response;
    CURL* handle;
    std::shared_ptr<const HostTls> tls;
    CURLcode result = CURLE_OK;
    // Set by the transport's thread; only the transfer's caller waits for them.
    std::mutex mutex{};
    std::condition_variable changed{};
    bool finished = false;
    bool body_arrived = false;  // the sink wants the caller to use what arrived (BodySink::arrived)

    void finish() {
        std::lock_guard lock(mutex);
        finished = true;
        changed.notify_one();
    }
};

namespace {

using Transfer = HttpTransport::Transfer;

size_t onHeader(char* data, size_t size, size_t count, void* user) {
    auto* x = static_cast<Transfer*>(user);
    const size_t bytes = size * count;
    std::string_view line(data, bytes);
    // A new status line (after a redirect, a proxy's CONNECT reply or 100 Continue) starts over.
    if (line.starts_with("HTTP/")) {
        x->response->headers.clear();
        return bytes;
    }
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
        x->response->headers.emplace_back(lower(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
    }
    return bytes;
}

size_t onBody(char* data, size_t size, size_t count, void* user) {
    auto* x = static_cast<Transfer*>(user);
    const size_t bytes = size * count;
    HttpResponse& r = *x->response;
    if (r.status == 0) curl_easy_getinfo(x->handle, CURLINFO_RESPONSE_CODE, &r.status);
    r.body_bytes += bytes;
    if (x->request->sink != nullptr) {
        if (!x->request->sink->write(r, {reinterpret_cast<const uint8_t*>(data), bytes})) {
            r.stopped_by_sink = true;
            return 0;
        }
        if (x->request->sink->arrivalWanted()) {
            std::lock_guard lock(x->mutex);
            if (!x->body_arrived) {
                x->body_arrived = true;
                x->changed.notify_one();
            }
        }
        return bytes;
    }
    if (r.body_bytes > HttpResponse::kMaxText) {
        r.too_large = true;
        return 0;
    }
    r.text.append(data, bytes);
    return bytes;
}

// libcurl rewinds an upload it must send again on its own (a reused connection the server had
// closed, an HTTP/2 stream refused); without this it fails with CURLE_SEND_FAIL_REWIND.
int onUploadSeek(void* user, curl_off_t offset, int origin) {
    auto* x = static_cast<Transfer*>(user);
    if (x->request->body == nullptr || offset != 0 || origin != SEEK_SET) return CURL_SEEKFUNC_CANTSEEK;
    try {
        x->request->body->rewind();
        return CURL_SEEKFUNC_OK;
    } catch (const rafs::Error&) {
        return CURL_SEEKFUNC_FAIL;
    }
}

// Text a server sent, for one line of a message: at most 200 characters, control characters
// shown as '?'.
std::string shown(std::string text) {
    if (text.size() > 200) text = text.substr(0, 200) + "...";
    for (char& c : text) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    return text;
}

size_t onUpload(char* data, size_t size, size_t count, void* user) {
    auto* x = static_cast<Transfer*>(user);
    if (x->request->body == nullptr) return 0;
    try {
        return x->request->body->read({reinterpret_cast<uint8_t*>(data), size * count});
    } catch (const rafs::Error& e) {
        x->response->curl_error = e.what();
        return CURL_READFUNC_ABORT;
    }
}

// The host's CA certificates join the system's in the connection's trust store.
CURLcode onSslContext(CURL*, void* ssl_ctx, void* user) {
    const auto* tls = static_cast<const HostTls*>(user);
    X509_STORE* store = SSL_CTX_get_cert_store(static_cast<SSL_CTX*>(ssl_ctx));
    for (X509* cert : tls->extra_cas) X509_STORE_add_cert(store, cert);
    // A certificate the store already has is refused with an error on the thread's queue, where
    // it would turn up in a later, unrelated message.
    ERR_clear_error();
    return CURLE_OK;
}

struct HeaderList {
    curl_slist* list = nullptr;
    ~HeaderList() { curl_slist_free_all(list); }
    void add(const std::string& line) {
        curl_slist* next = curl_slist_append(list, line.c_str());
        if (next == nullptr) rafs::fail("out of memory building a request");
        list = next;
    }
};

// curl_easy_setopt fails only for an option this libcurl lacks or out of memory: both mean the
// request cannot be made as asked.
template <typename T>
void setOption(CURL* handle, CURLoption option, T value) {
    if (curl_easy_setopt(handle, option, value) != CURLE_OK) {
        rafs::fail("libcurl refused option {}", static_cast<int>(option));
    }
}

// Where a message about HTTP against HTTPS points.
constexpr std::string_view kPlainHttpSetting =
    "plain HTTP is plain_http in rafsd's [backend.hosts] and --plain-http for mkrafs";

// libcurl says "Couldn't connect to server" also when it could not create a socket, with no
// errno (CURLINFO_OS_ERRNO is 0): the server then takes the blame for this process's fd limit.
// A socket made here tells: ", and this process cannot open a socket: Too many open files".
std::string socketShortage() {
    const rafs::UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.get() >= 0) return {};
    return fmt::format(", and this process cannot open a socket: {}", std::strerror(errno));
}

}  // namespace

std::optional<std::string_view> HttpResponse::header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
        if (key == name) return value;
    }
    return std::nullopt;
}

std::vector<std::string_view> HttpResponse::headerValues(std::string_view name) const {
    std::vector<std::string_view> values;
    for (const auto& [key, value] : headers) {
        if (key == name) values.push_back(value);
    }
    return values;
}

std::string HttpResponse::summary() const {
    if (too_large) return fmt::format("HTTP {}: a reply of more than {} bytes, which no registry document needs", status,
                                      kMaxText);
    // An error status says more than how the transfer ended (a 416 whose body is shorter than
    // its Content-Length ends in CURLE_PARTIAL_FILE: registry.md).
    if (curl_code != 0 && !stopped_by_sink) {
        if (status >= 400) return fmt::format("HTTP {} ({})", status, curl_error);
        // OpenSSL's words for a TLS handshake answered by an HTTP reply.
        if (curl_code == CURLE_SSL_CONNECT_ERROR && curl_error.find("wrong version number") != std::string::npos) {
            return fmt::format("{} (the server answered in plain HTTP: {})", curl_error, kPlainHttpSetting);
        }
        return curl_error;
    }
    std::string out = fmt::format("HTTP {}", status);
    // What Go's net/http (docker-registry) and nginx answer a plain HTTP request on a TLS port.
    // Go's has no header at all, which no registry's reply lacks: a HEAD, whose body is not read,
    // is known by that.
    if (status == 400 && (text.find("HTTP request to an HTTPS server") != std::string::npos ||
                          text.find("plain HTTP request was sent to HTTPS port") != std::string::npos)) {
        return fmt::format("{} (the server wants HTTPS, and the request was plain HTTP: {})", out, kPlainHttpSetting);
    }
    if (status == 400 && headers.empty()) {
        return fmt::format("{} with no headers, as a TLS server answers a plain HTTP request ({})", out,
                           kPlainHttpSetting);
    }
    // Registry errors: {"errors":[{"code":"BLOB_UNKNOWN","message":"..."}]}; other bodies are not
    // shown, since they may be anything.
    const auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_object() && json.contains("errors") && json["errors"].is_array() && !json["errors"].empty()) {
        const auto& e = json["errors"][0];
        if (e.is_object() && e.contains("code") && e["code"].is_string()) {
            out += " (" + shown(e["code"].get<std::string>());
            if (e.contains("message") && e["message"].is_string()) out += ": " + shown(e["message"].get<std::string>());
            out += ")";
        }
    }
    return out;
}

HttpTransport::HttpTransport(TransportOptions options, std::shared_ptr<const TlsConfig> tls)
    : options_(options), tls_(std::move(tls)) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    if (CURL* probe = curl_easy_init()) {
        char* ca_path = nullptr;
        has_ca_path_ = curl_easy_getinfo(probe, CURLINFO_CAPATH, &ca_path) == CURLE_OK && ca_path != nullptr;
        curl_easy_cleanup(probe);
    }
    multi_ = curl_multi_init();
    if (multi_ == nullptr) rafs::fail("libcurl: cannot create a multi handle");
    if (curl_multi_setopt(multi_, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX) != CURLM_OK) {
        curl_multi_cleanup(multi_);
        rafs::fail("libcurl: no HTTP/2 multiplexing");
    }
    thread_ = std::thread([this] { run(); });
}

HttpTransport::~HttpTransport() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    curl_multi_wakeup(multi_);
    thread_.join();
    curl_multi_cleanup(multi_);
}

void HttpTransport::run() {
    std::vector<Transfer*> active;
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            // Callers wait in perform() until their transfer is done, so none is pending here.
            if (stopping_ && submitted_.empty() && active.empty()) return;
            for (Transfer* t : submitted_) {
                if (curl_multi_add_handle(multi_, t->handle) != CURLM_OK) {
                    t->result = CURLE_OUT_OF_MEMORY;
                    t->finish();
                    continue;
                }
                active.push_back(t);
            }
            submitted_.clear();
        }
        int running = 0;
        CURLMcode state = curl_multi_perform(multi_, &running);
        int left = 0;
        while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
            if (msg->msg != CURLMSG_DONE) continue;
            auto it = std::ranges::find(active, msg->easy_handle, &Transfer::handle);
            if (it == active.end()) continue;
            Transfer* t = *it;
            t->result = msg->data.result;
            curl_multi_remove_handle(multi_, t->handle);
            active.erase(it);
            t->finish();
        }
        if (state == CURLM_OK) state = curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
        if (state != CURLM_OK) {
            // The multi handle itself failed (out of memory, a broken wake-up pipe): end every
            // transfer as a receive error, which callers retry, rather than spin on it.
            for (Transfer* t : active) {
                curl_multi_remove_handle(multi_, t->handle);
                t->result = CURLE_RECV_ERROR;
                t->finish();
            }
            active.clear();
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
}

HttpResponse HttpTransport::perform(const HttpRequest& request) {
    HttpResponse response;
    Transfer x{&request, &response, nullptr, nullptr};
    try {
        x.tls = tls_->forHost(Url::parse(request.url).authority);
    } catch (const rafs::Error& e) {
        response.curl_code = CURLE_SSL_CERTPROBLEM;
        response.curl_error = e.what();
        return response;
    }
    struct EasyHandle {
        CURL* h = curl_easy_init();
        ~EasyHandle() { curl_easy_cleanup(h); }
    } easy;
    if (easy.h == nullptr) rafs::fail("libcurl: cannot create a handle");
    CURL* h = easy.h;
    x.handle = h;
    HeaderList headers;
    for (const std::string& line : request.headers) headers.add(line);
    // No "Expect: 100-continue" and no libcurl "Accept: */*" guesswork.
    headers.add("Expect:");
    char error[CURL_ERROR_SIZE] = {};
    const std::string range = request.range ? fmt::format("{}-{}", request.range->first, request.range->second) : "";
    setOption(h, CURLOPT_URL, request.url.c_str());
    setOption(h, CURLOPT_PROTOCOLS_STR, "http,https");
    setOption(h, CURLOPT_NOSIGNAL, 1L);
    // Over TLS, wait for a connection that can take another stream (HTTP/2, by ALPN) rather than
    // open one more. Not over plain http, which never multiplexes here (CURL_HTTP_VERSION_2TLS):
    // there the wait serializes transfers behind a server that closes its connections, so one
    // stalled reply would hold every other (curl issue #15838).
    setOption(h, CURLOPT_PIPEWAIT, request.url.starts_with("https://") ? 1L : 0L);
    setOption(h, CURLOPT_ERRORBUFFER, error);
    setOption(h, CURLOPT_HTTPHEADER, headers.list);
    setOption(h, CURLOPT_USERAGENT, "rafsd/0.1");
    setOption(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    // The TLS settings are the first host's and would go with every redirect: a client
    // certificate offered to, or a private CA trusted for, another host. Such a host's redirects
    // are not followed.
    const bool follow = request.follow_redirects && x.tls->client_cert.empty() && x.tls->extra_cas.empty();
    setOption(h, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    if (follow) {
        setOption(h, CURLOPT_MAXREDIRS, HttpRequest::kMaxRedirects);
        setOption(h, CURLOPT_REDIR_PROTOCOLS_STR, request.url.starts_with("https://") ? "https" : "http,https");
    }
    setOption(h, CURLOPT_TCP_KEEPALIVE, 1L);
    setOption(h, CURLOPT_BUFFERSIZE, 512L * 1024);
    setOption(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout.count() * 1000));
    setOption(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout.count() * 1000));
    setOption(h, CURLOPT_LOW_SPEED_LIMIT, static_cast<long>(options_.low_speed_limit));
    setOption(h, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.low_speed_time.count()));
    // An empty proxy is "none", also when http_proxy is set: the configuration decides.
    setOption(h, CURLOPT_PROXY, request.proxy.c_str());
    setOption(h, CURLOPT_HEADERFUNCTION, onHeader);
    setOption(h, CURLOPT_HEADERDATA, &x);
    setOption(h, CURLOPT_WRITEFUNCTION, onBody);
    setOption(h, CURLOPT_WRITEDATA, &x);
    // The same roots either way (update-ca-certificates writes both), but OpenSSL parses a bundle
    // file whole at the first handshake, about 20 ms for Debian's 140 roots on the path of every
    // cold mount, where a hashed directory is searched for the one issuer a chain needs.
    if (has_ca_path_) setOption(h, CURLOPT_CAINFO, static_cast<const char*>(nullptr));
    // The host's CAs go into the connection's store (onSslContext): a store libcurl cached and
    // shared across connections (7.87+, CA bundle files) would carry them to other hosts. Only
    // such a host's connections go without the cache (a bundle parsed again each).
    if (!x.tls->extra_cas.empty()) setOption(h, CURLOPT_CA_CACHE_TIMEOUT, 0L);
    setOption(h, CURLOPT_SSL_CTX_FUNCTION, onSslContext);
    setOption(h, CURLOPT_SSL_CTX_DATA, x.tls.get());
    if (!x.tls->client_cert.empty()) {
        setOption(h, CURLOPT_SSLCERT, x.tls->client_cert.c_str());
        setOption(h, CURLOPT_SSLKEY, x.tls->client_key.c_str());
    }
    if (request.method == "HEAD") setOption(h, CURLOPT_NOBODY, 1L);
    if (request.method == "DELETE") setOption(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    if (request.method == "PUT" || request.method == "POST" || request.method == "PATCH") {
        // UPLOAD sends the body with its length (no chunked encoding, which registries refuse for
        // blob uploads); CUSTOMREQUEST names the method when it is not PUT.
        setOption(h, CURLOPT_UPLOAD, 1L);
        setOption(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
        setOption(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body ? request.body->size() : 0));
        setOption(h, CURLOPT_READFUNCTION, onUpload);
        setOption(h, CURLOPT_READDATA, &x);
        setOption(h, CURLOPT_SEEKFUNCTION, onUploadSeek);
        setOption(h, CURLOPT_SEEKDATA, &x);
    }
    if (request.range) setOption(h, CURLOPT_RANGE, range.c_str());

    {
        std::lock_guard lock(mutex_);
        if (stopping_) rafs::fail("the HTTP transport is shutting down");
        submitted_.push_back(&x);
    }
    curl_multi_wakeup(multi_);
    {
        std::unique_lock lock(x.mutex);
        for (;;) {
            x.changed.wait(lock, [&] { return x.finished || x.body_arrived; });
            if (x.finished) break;
            x.body_arrived = false;
            lock.unlock();
            request.sink->arrived();
            lock.lock();
        }
    }
    const CURLcode code = x.result;
    response.curl_code = static_cast<int>(code);
    if (code != CURLE_OK && response.curl_error.empty()) {
        response.curl_error = error[0] != '\0' ? std::string(error) : curl_easy_strerror(code);
        if (code == CURLE_COULDNT_CONNECT) response.curl_error += socketShortage();
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
    curl_off_t total_us = 0;
    curl_easy_getinfo(h, CURLINFO_TOTAL_TIME_T, &total_us);
    response.elapsed = std::chrono::microseconds(total_us);
    return response;
}

}  // namespace registry
