#include "registry/RegistryClient.h"

#include "format/Error.h"
#include "registry/AuthChallenge.h"
#include "registry/Base64.h"
#include "registry/HttpBlobClient.h"
#include "registry/OciImage.h"
#include "registry/RangeSink.h"
#include "registry/Url.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

namespace registry {

namespace {

// Pre-signed storage URLs last about 20 minutes (S3's default); reusing one for less stays clear
// of the end.
constexpr std::chrono::minutes kRedirectReuse{5};

// Why a push request failed. A registry that takes no pushes at all (distribution in read-only
// maintenance mode, or as a pull-through cache) has no route for them and answers 405: say so,
// since "HTTP 405" alone reads like a client bug (distribution's registry/handlers/app.go, readOnly).
std::string pushRefusal(const HttpResponse& r) {
    std::string why = r.summary();
    if (r.curl_code == 0 && r.status == 405) why += ": this registry takes no pushes (read-only, or a pull-through cache)";
    return why;
}

bool isRedirect(long status) { return status == 301 || status == 302 || status == 303 || status == 307 || status == 308; }

std::string basicHeader(const Credentials& c) { return "Authorization: Basic " + base64Encode(c.username + ":" + c.secret); }

// Whether `url` is on the endpoint itself (scheme and authority): only there does the registry's
// Authorization go, not to storage it redirects or hands an upload to.
bool onEndpoint(const Url& url, const std::string& base, const std::string& authority) {
    return url.authority == authority && url.scheme == Url::parse(base).scheme;
}

// A Location relative to the server made absolute (RFC 3986 §5.2): "//host/path" keeps the
// scheme, "/path" the scheme and authority (not a mirror's path prefix in `base`).
std::string absoluteLocation(const std::string& base, std::string_view location) {
    const Url server = Url::parse(base);
    if (location.starts_with("//")) return server.scheme + ":" + std::string(location);
    if (location.starts_with("/")) return server.scheme + "://" + server.authority + std::string(location);
    return std::string(location);
}

}  // namespace

RegistryClient::RegistryClient(RegistryOptions options, std::shared_ptr<RetryingTransport> transport,
                               std::shared_ptr<CredentialStore> credentials)
    : options_(std::move(options)),
      transport_(std::move(transport)),
      credentials_(std::move(credentials)),
      endpoints_(
          [&] {
              std::vector<std::string> bases = options_.mirrors;
              for (std::string& m : bases) {
                  while (m.ends_with('/')) m.pop_back();
              }
              bases.push_back((options_.plain_http ? "http://" : "https://") + options_.host);
              return bases;
          }(),
          options_.mirror_skip),
      scope_("repository:" + options_.repository + (options_.push ? ":pull,push" : ":pull")) {
    for (size_t i = 0; i < endpoints_.size(); ++i) Url::parse(endpoints_.at(i));
}

std::string RegistryClient::describe() const {
    return "registry:" + endpoints_.at(endpoints_.size() - 1) + "/" + options_.repository;
}

RegistryClient::Endpoint RegistryClient::endpoint(size_t index) const {
    return {endpoints_.at(index), Url::parse(endpoints_.at(index)).authority};
}

std::string RegistryClient::bearer(const HostAuth& auth, const Endpoint& ep, const std::string& refused,
                                   const std::vector<std::string>& extra) {
    const std::string& host = ep.authority;
    std::vector<std::string> scopes{scope_};
    scopes.insert(scopes.end(), extra.begin(), extra.end());
    // Per registry host too: a mirror whose challenge names the registry's token service must not
    // get the token issued for the registry's credentials, nor the registry the mirror's.
    std::string key = host + " " + auth.realm + " " + auth.service;
    for (const std::string& scope : scopes) key += " " + scope;
    return tokens_.get(key, [&] { return fetchToken(auth, ep, scopes); }, refused);
}

BearerToken RegistryClient::fetchToken(const HostAuth& auth, const Endpoint& ep, const std::vector<std::string>& scopes) {
    const std::string& host = ep.authority;
    const Url realm = Url::parse(auth.realm);
    // Credentials go to the token service in the clear over http only where they went so to the
    // endpoint that asked (plain http by configuration), or to this machine's loopback.
    if (realm.scheme == "http" && !ep.base.starts_with("http://") && !isLoopbackAuthority(realm.authority)) {
        rafs::fail("{} names a token service over plain http ({}); refusing to send credentials there", host,
                   withoutQuery(auth.realm));
    }
    HttpRequest request;
    request.url = realm.str() + (realm.path.find('?') == std::string::npos ? "?" : "&");
    if (!auth.service.empty()) request.url += "service=" + queryEscape(auth.service) + "&";
    // One parameter per scope, as distribution's token protocol repeats it.
    for (size_t i = 0; i < scopes.size(); ++i) request.url += (i == 0 ? "scope=" : "&scope=") + queryEscape(scopes[i]);
    const std::optional<Credentials> creds = credentials_->lookup(host);
    if (creds) request.headers.push_back(basicHeader(*creds));
    HttpResponse r = transport_->perform(request);
    stats().token_refreshes++;
    if (r.curl_code == 0 && (r.status == 401 || r.status == 403)) {
        if (creds) {
            credentials_->forget(host);
            rafs::fail("token service {} refused the credentials for {} from {}", withoutQuery(auth.realm), host,
                       credentials_->path().string());
        }
        rafs::fail("token service {} wants credentials for {}, and {} has none", withoutQuery(auth.realm), host,
                   credentials_->describe());
    }
    if (r.curl_code != 0 || r.status != 200) rafs::fail("token service {}: {}", withoutQuery(auth.realm), r.summary());
    const auto json = nlohmann::json::parse(r.text, nullptr, false);
    BearerToken token;
    for (const char* field : {"token", "access_token"}) {
        if (json.is_object() && json.contains(field) && json[field].is_string() && !json[field].get<std::string>().empty()) {
            token.value = json[field].get<std::string>();
        }
    }
    if (token.value.empty()) rafs::fail("token service {}: no token in its answer", withoutQuery(auth.realm));
    // It goes into an Authorization header verbatim: a CR or LF would start headers of the token
    // service's choosing on the registry's connection. Printable ASCII only (RFC 6750's b64token is
    // narrower still).
    if (!std::all_of(token.value.begin(), token.value.end(), [](char c) { return c > ' ' && c < 0x7f; })) {
        rafs::fail("token service {}: its token holds a space, a control or a non-ASCII character",
                   withoutQuery(auth.realm));
    }
    // Without expires_in a token lives 60 s (distribution's token spec). Taken as a day at most:
    // a time point that far off would overflow the cache's clock and never be reused.
    constexpr int64_t kMaxLifetime = 24 * 3600;
    if (json.contains("expires_in") && json["expires_in"].is_number_integer() && json["expires_in"].get<int64_t>() > 0) {
        token.lifetime = std::chrono::seconds(std::min(json["expires_in"].get<int64_t>(), kMaxLifetime));
    }
    return token;
}

RegistryClient::Authorization RegistryClient::authorizationFor(const Endpoint& ep) {
    HostAuth auth;
    bool unasked_failed = false;
    {
        std::lock_guard lock(mutex_);
        auth = auth_[ep.authority];
        unasked_failed = unasked_failed_.count(ep.authority) != 0;
    }
    Authorization a;
    if (auth.scheme == HostAuth::Scheme::Basic) {
        a.basic = credentials_->lookup(ep.authority);
        if (a.basic) a.header = basicHeader(*a.basic);
    } else if (auth.scheme == HostAuth::Scheme::Bearer) {
        a.token = bearer(auth, ep, {});
        a.header = "Authorization: Bearer " + a.token;
    } else if (!unasked_failed) {
        // No challenge seen from the host yet: its credentials go along at once, saving the round
        // trip of a first 401 on every cold mount and convert (a registry that wants tokens
        // answers with its Bearer challenge all the same). A helper that fails here fails again,
        // with its error, if the host does ask.
        try {
            a.basic = credentials_->lookup(ep.authority);
        } catch (const rafs::Error&) {
            std::lock_guard lock(mutex_);
            unasked_failed_.insert(ep.authority);
        }
        if (a.basic) {
            a.header = basicHeader(*a.basic);
            a.unasked = true;
        }
    }
    return a;
}

RegistryClient::Authorization RegistryClient::answerChallenge(const Endpoint& ep, const HttpResponse& response,
                                                              const Authorization& used) {
    std::optional<AuthChallenge> basic, bearer_challenge;
    for (std::string_view header : response.headerValues("www-authenticate")) {
        for (AuthChallenge& c : parseChallenges(header)) {
            if (c.scheme == "bearer" && !bearer_challenge) bearer_challenge = std::move(c);
            else if (c.scheme == "basic" && !basic) basic = std::move(c);
        }
    }
    const std::string& config = credentials_->path().string();
    Authorization a;
    if (bearer_challenge) {
        HostAuth auth{HostAuth::Scheme::Bearer, bearer_challenge->param("realm"), bearer_challenge->param("service")};
        if (auth.realm.empty()) rafs::fail("{}: a Bearer challenge without a realm", ep.authority);
        {
            std::lock_guard lock(mutex_);
            auth_[ep.authority] = auth;
        }
        // The scopes the challenge names on other repositories: a cross-repository mount needs
        // pull on the repository it mounts from (distribution names it in its challenge).
        std::vector<std::string> extra;
        const std::string wanted = bearer_challenge->param("scope");
        const std::string ours = "repository:" + options_.repository + ":";
        for (size_t at = 0; at < wanted.size();) {
            const size_t space = std::min(wanted.find(' ', at), wanted.size());
            std::string scope = wanted.substr(at, space - at);
            if (!scope.empty() && !scope.starts_with(ours) && std::find(extra.begin(), extra.end(), scope) == extra.end()) {
                extra.push_back(std::move(scope));
            }
            at = space + 1;
        }
        a.token = bearer(auth, ep, used.token, extra);
        a.header = "Authorization: Bearer " + a.token;
        return a;
    }
    if (!basic) rafs::fail("{}: 401 without a Basic or Bearer challenge", ep.authority);
    {
        std::lock_guard lock(mutex_);
        auth_[ep.authority] = {HostAuth::Scheme::Basic, {}, {}};
    }
    a.basic = credentials_->lookup(ep.authority);
    if (a.basic && used.basic && *a.basic == *used.basic) {
        // Maybe a helper has newer ones; the file itself is re-read whenever it changes.
        credentials_->forget(ep.authority);
        a.basic = credentials_->lookup(ep.authority);
        if (a.basic && *a.basic == *used.basic) rafs::fail("{} refused the credentials for it in {}", ep.authority, config);
    }
    if (!a.basic) {
        rafs::fail("{} wants credentials (Basic), and {} has none for it", ep.authority, credentials_->describe());
    }
    a.header = basicHeader(*a.basic);
    return a;
}

HttpResponse RegistryClient::authorized(const Endpoint& ep, HttpRequest request, const Exchange& exchange) {
    auto run = [&](const Authorization& a) {
        HttpRequest r = request;
        if (!a.header.empty()) r.headers.push_back(a.header);
        return exchange(r);
    };
    Authorization a = authorizationFor(ep);
    HttpResponse response = run(a);
    if (response.curl_code != 0 || response.status != 401) return response;
    // Credentials sent unasked were not refused as an answer to a challenge: they may be sent again.
    a = answerChallenge(ep, response, a.unasked ? Authorization{} : a);
    response = run(a);
    if (response.curl_code == 0 && response.status == 401) {
        if (!a.token.empty()) rafs::fail("{} refused a fresh token from its token service", ep.authority);
        rafs::fail("{} refused the credentials for it in {}", ep.authority, credentials_->path().string());
    }
    return response;
}

void RegistryClient::readFrom(const Endpoint& ep, const std::string& digest, uint64_t offset, std::span<uint8_t> out,
                              uint64_t* total, const RangeSink::Arrived& arrived) {
    const std::string last_byte = std::to_string(offset + out.size() - 1);
    RangeSink sink(offset, out, arrived);
    std::string why;
    auto fetch = [&](const std::string& url, const std::vector<std::string>& headers, HttpResponse& last) {
        HttpRequest request;
        request.url = url;
        request.headers = headers;
        why.clear();
        const bool ok = getRange(*transport_, request, offset, sink, out.size(), last, why);
        if (ok && total != nullptr) {
            auto range = last.header("content-range");
            auto parsed = range ? parseContentRange(*range) : std::nullopt;
            *total = parsed ? parsed->total : 0;
        }
        return ok;
    };
    const std::string redirect_key = ep.base + " " + digest;
    {
        std::unique_lock lock(mutex_);
        auto it = redirects_.find(redirect_key);
        if (it != redirects_.end() && it->second.expires > std::chrono::steady_clock::now()) {
            const std::string url = it->second.url;
            lock.unlock();
            HttpResponse last;
            // Storage URLs are signed: no Authorization goes there.
            if (fetch(url, {}, last)) return;
            // Expired or refused: ask the registry again, once.
            lock.lock();
            redirects_.erase(redirect_key);
        }
    }
    const std::string url = ep.base + "/v2/" + options_.repository + "/blobs/" + digest;
    HttpResponse last;
    bool ok = false;
    HttpRequest request;
    request.url = url;
    last = authorized(ep, request, [&](const HttpRequest& r) {
        HttpResponse response;
        ok = fetch(r.url, r.headers, response);
        return response;
    });
    if (ok) return;
    if (last.curl_code == 0 && isRedirect(last.status) && last.header("location")) {
        const std::string target = absoluteLocation(ep.base, *last.header("location"));
        std::vector<std::string> headers;
        if (onEndpoint(Url::parse(target), ep.base, ep.authority)) {
            if (std::string header = authorizationFor(ep).header; !header.empty()) headers.push_back(header);
        }
        HttpResponse redirected;
        if (fetch(target, headers, redirected)) {
            std::lock_guard lock(mutex_);
            redirects_[redirect_key] = {target, std::chrono::steady_clock::now() + kRedirectReuse};
            return;
        }
        rafs::fail("GET {} bytes {}-{} (redirected from {}): {}", withoutQuery(target), offset, last_byte, url, why);
    }
    rafs::fail("GET {} bytes {}-{}: {}", url, offset, last_byte, why);
}

uint64_t RegistryClient::sizeFrom(const Endpoint& ep, const std::string& digest) {
    HttpRequest request;
    request.method = "HEAD";
    request.url = ep.base + "/v2/" + options_.repository + "/blobs/" + digest;
    HttpResponse head = authorized(ep, request, [&](const HttpRequest& r) { return transport_->perform(r); });
    if (auto size = sizeFromHead(head)) return *size;
    const bool ask_by_get = head.curl_code == 0 && (isRedirect(head.status) || head.status == 200 || head.status == 405);
    if (!ask_by_get) rafs::fail("HEAD {}: {}", request.url, head.summary());
    // Signed storage URLs are often for GET only: one byte by GET tells the size in Content-Range.
    uint8_t byte = 0;
    uint64_t total = 0;
    readFrom(ep, digest, 0, {&byte, 1}, &total);
    if (total == 0) rafs::fail("{}: no size in the reply (no Content-Length, no Content-Range)", request.url);
    return total;
}

void RegistryClient::onSomeEndpoint(const std::function<void(const Endpoint&)>& work) {
    std::string failures;
    for (size_t index : endpoints_.order()) {
        const Endpoint ep = endpoint(index);
        try {
            work(ep);
            endpoints_.succeeded(index);
            return;
        } catch (const rafs::Error& e) {
            if (endpoints_.size() > 1) endpoints_.failed(index);
            failures += failures.empty() ? e.what() : std::string("; then ") + e.what();
        }
    }
    stats().failures++;
    throw rafs::Error(failures);
}

uint64_t RegistryClient::blobSize(const std::string& digest, bool ask) {
    if (!ask) {
        std::lock_guard lock(mutex_);
        if (auto it = sizes_.find(digest); it != sizes_.end()) return it->second;
    }
    uint64_t size = 0;
    onSomeEndpoint([&](const Endpoint& ep) { size = sizeFrom(ep, digest); });
    std::lock_guard lock(mutex_);
    sizes_[digest] = size;
    return size;
}

void RegistryClient::readBlob(const std::string& digest, uint64_t offset, std::span<uint8_t> out,
                              const RangeSink::Arrived& arrived) {
    if (out.empty()) return;
    onSomeEndpoint([&](const Endpoint& ep) { readFrom(ep, digest, offset, out, nullptr, arrived); });
}

std::string RegistryClient::distrustPreferredEndpoint() {
    if (endpoints_.size() == 1) return {};
    const size_t preferred = endpoints_.order().front();
    endpoints_.failed(preferred);
    return endpoint(preferred).base;
}

HttpResponse RegistryClient::perform(const Endpoint& ep, HttpRequest request) {
    // The registry's Authorization stays with the registry: an upload session's Location may name
    // another host (storage behind the registry), which gets the request without it.
    if (!onEndpoint(Url::parse(request.url), ep.base, ep.authority)) return transport_->perform(request);
    return authorized(ep, std::move(request), [&](const HttpRequest& r) { return transport_->perform(r); });
}

FetchedManifest RegistryClient::fetchManifest(const std::string& reference) {
    FetchedManifest out;
    auto fetch = [&](const Endpoint& ep) {
        HttpRequest request;
        request.url = ep.base + "/v2/" + options_.repository + "/manifests/" + reference;
        request.headers.push_back("Accept: " + std::string(media::kAcceptManifests));
        const HttpResponse r = perform(ep, request);
        if (r.curl_code == 0 && r.status == 404) {
            rafs::fail("{}/{}{}{}: no such manifest (unknown {})", ep.authority, options_.repository,
                       reference.starts_with("sha256:") ? "@" : ":", reference,
                       reference.starts_with("sha256:") ? "digest" : "tag");
        }
        // A body past HttpResponse::kMaxText (more than any real manifest or index) fails here.
        if (r.curl_code != 0 || r.status != 200) rafs::fail("GET {}: {}", request.url, r.summary());
        out.bytes = r.text;
        out.digest = sha256Digest(out.bytes);
        out.media_type = std::string(r.header("content-type").value_or(""));
        if (const size_t semicolon = out.media_type.find(';'); semicolon != std::string::npos) out.media_type.resize(semicolon);
        if (reference.starts_with("sha256:") && out.digest != reference) {
            rafs::fail("GET {}: the manifest's digest is {}, not the one asked for", request.url, out.digest);
        }
        if (auto header = r.header("docker-content-digest"); header && *header != out.digest) {
            rafs::fail("GET {}: the manifest's digest is {}, but the registry says {}", request.url, out.digest, *header);
        }
    };
    // A mirror serves what a digest names (the digest is checked); which manifest a tag names is
    // the registry's to say unless configured otherwise, else a stale or hostile mirror would
    // choose the image (containerd's hosts.toml `resolve` capability, registries.conf's
    // mirror-by-digest-only).
    if (reference.starts_with("sha256:") || options_.mirrors_resolve_tags) {
        onSomeEndpoint(fetch);
    } else {
        try {
            fetch(origin());
        } catch (const rafs::Error&) {
            stats().failures++;
            throw;
        }
    }
    return out;
}

bool RegistryClient::hasBlob(const std::string& digest) {
    const Endpoint ep = origin();
    HttpRequest request;
    request.method = "HEAD";
    request.url = ep.base + "/v2/" + options_.repository + "/blobs/" + digest;
    const HttpResponse r = perform(ep, request);
    // A registry whose storage redirects (signed URLs) answers for a blob it has with a redirect.
    if (r.curl_code == 0 && (r.status == 200 || isRedirect(r.status))) return true;
    if (r.curl_code == 0 && r.status == 404) return false;
    rafs::fail("HEAD {}: {}", request.url, r.summary());
}

bool RegistryClient::mountBlob(const std::string& digest, const std::string& from) {
    const Endpoint ep = origin();
    HttpRequest start;
    start.method = "POST";
    start.url = ep.base + "/v2/" + options_.repository + "/blobs/uploads/?mount=" + queryEscape(digest) +
                "&from=" + queryEscape(from);
    const HttpResponse r = perform(ep, start);
    if (r.curl_code == 0 && r.status == 201) return true;
    if (r.curl_code != 0 || r.status != 202) rafs::fail("POST {}: {}", withoutQuery(start.url), pushRefusal(r));
    if (auto location = r.header("location"); location && !cancel_refused_.load()) {
        HttpRequest cancel;
        cancel.method = "DELETE";
        cancel.url = absoluteLocation(ep.base, *location);
        // An abandoned session expires on its own (distribution purges them), so a failed
        // cancel costs nothing: nor does a refused one (distribution 2.8 wants the delete scope,
        // which a token for pull and push lacks: distribution's registry/handlers/app.go), whose
        // error is not the mount's.
        try {
            perform(ep, cancel);
        } catch (const rafs::Error&) {
            cancel_refused_.store(true);
        }
    }
    return false;
}

// A PUT that failed may have left part of its body in the session (its retries then fail for good:
// the session holds more than the blob) or committed it with the reply lost: the blob may be there
// already, else the upload starts over in a new session, a few times.
void RegistryClient::pushBlob(const std::string& digest, RequestBody& body) {
    constexpr int kSessions = 3;
    for (int session = 1;; ++session) {
        try {
            uploadInSession(digest, body);
            return;
        } catch (const rafs::Error&) {
            bool there = false;
            try {
                there = hasBlob(digest);
            } catch (const rafs::Error&) {
                // The upload's own error says more.
            }
            if (there) return;
            if (session == kSessions) throw;  // (the transport rewinds the body before each attempt)
        }
    }
}

void RegistryClient::uploadInSession(const std::string& digest, RequestBody& body) {
    const Endpoint ep = origin();
    HttpRequest start;
    start.method = "POST";
    start.url = ep.base + "/v2/" + options_.repository + "/blobs/uploads/";
    const HttpResponse started = perform(ep, start);
    if (started.curl_code != 0 || started.status != 202 || !started.header("location")) {
        rafs::fail("POST {}: {}", start.url, pushRefusal(started));
    }
    HttpRequest put;
    put.method = "PUT";
    put.url = absoluteLocation(ep.base, *started.header("location"));
    put.url += (put.url.find('?') == std::string::npos ? "?" : "&") + std::string("digest=") + queryEscape(digest);
    put.headers.push_back("Content-Type: application/octet-stream");
    put.body = &body;
    const HttpResponse done = perform(ep, put);
    if (done.curl_code != 0 || done.status != 201) {
        rafs::fail("PUT {} ({} bytes of {}): {}", withoutQuery(put.url), body.size(), digest, pushRefusal(done));
    }
}

std::string RegistryClient::putManifest(const std::string& reference, std::string_view media_type,
                                        const std::string& bytes) {
    const Endpoint ep = origin();
    HttpRequest request;
    request.method = "PUT";
    request.url = ep.base + "/v2/" + options_.repository + "/manifests/" + reference;
    request.headers.push_back("Content-Type: " + std::string(media_type));
    BytesBody body(bytes);
    request.body = &body;
    const HttpResponse r = perform(ep, request);
    if (r.curl_code != 0 || r.status != 201) rafs::fail("PUT {}: {}", request.url, pushRefusal(r));
    return sha256Digest(bytes);
}

}  // namespace registry
