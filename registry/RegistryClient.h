// Blobs of one repository of an OCI registry (distribution API): the size from
// `HEAD /v2/<repo>/blobs/<digest>`, bytes from range GETs of it. Tries the host's mirrors first,
// in order, skipping a failing one for a while (EndpointList). Authenticates as each server
// asks on a 401: Basic with the credentials of the CredentialStore, or Bearer tokens from the
// token service named in the challenge (TokenCache: one fetch at a time per scope, renewed
// before expiry and when refused). Follows a redirect to blob storage itself, without the
// Authorization header when the host changes, and reuses the target until it fails or expires.
#pragma once

#include "registry/CredentialStore.h"
#include "registry/EndpointList.h"
#include "registry/RangeSink.h"
#include "registry/RetryingTransport.h"
#include "registry/TokenCache.h"

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace registry {

struct RegistryOptions {
    std::string host;        // host[:port]
    std::string repository;  // "library/debian"
    bool plain_http = false;
    std::vector<std::string> mirrors;  // base URLs, tried before the host in this order
    bool mirrors_resolve_tags = false;  // tags too are asked of the mirrors first (else the host only)
    std::chrono::milliseconds mirror_skip{30'000};
    bool push = false;  // asks tokens for push too (mkrafs convert's target)
};

// A manifest or index as the registry served it: its bytes are what its digest is of.
struct FetchedManifest {
    std::string media_type;  // Content-Type of the reply
    std::string digest;      // sha256 of `bytes`, checked against a digest reference
    std::string bytes;
};

class RegistryClient {
public:
    RegistryClient(RegistryOptions options, std::shared_ptr<RetryingTransport> transport,
                   std::shared_ptr<CredentialStore> credentials);

    // `digest`: "sha256:<hex>". Both throw rafs::Error naming the URL, the range and what went
    // wrong (on every endpoint tried). `arrived`, if set, follows the range as it comes in
    // (RangeSink::Arrived); another endpoint tried after a failure starts it again from 0.
    // `ask`: asked of the registry now, whatever was known (the answer is kept for later calls).
    uint64_t blobSize(const std::string& digest, bool ask = false);
    void readBlob(const std::string& digest, uint64_t offset, std::span<uint8_t> out,
                  const RangeSink::Arrived& arrived = {});
    // The endpoint reads would go to first served bytes that failed their digest: it is skipped
    // for a while, as after a failed transfer (a mirror with a damaged copy). Returns its base URL,
    // for messages; nothing is skipped, and "" returned, with one endpoint.
    std::string distrustPreferredEndpoint();
    // Mirrors and the host: how many places a read may go to.
    size_t endpointCount() const { return endpoints_.size(); }

    // GET /v2/<repo>/manifests/<reference> (a tag or a digest) from the first endpoint that has it.
    // Throws rafs::Error: "manifest unknown" for an unknown tag, a digest mismatch, a reply
    // larger than the spec's 4 MiB.
    FetchedManifest fetchManifest(const std::string& reference);

    // The rest write, and go to the host itself, never to a mirror.
    // Whether the repository has the blob (HEAD: 200 yes, 404 no, anything else an error).
    bool hasBlob(const std::string& digest);
    // Uploads `body` as blob `digest` (POST then a monolithic PUT; a failed PUT's session is not
    // used again: the blob is looked for, then sent again in a new session, at most 3 in all).
    void pushBlob(const std::string& digest, RequestBody& body);
    // Asks the registry to mount blob `digest` from repository `from` of the same registry
    // (a cross-repository mount); true if it did. A registry that cannot (202: an upload session
    // instead) has that session cancelled.
    bool mountBlob(const std::string& digest, const std::string& from);
    // PUT /v2/<repo>/manifests/<reference>; returns the digest of `bytes`.
    std::string putManifest(const std::string& reference, std::string_view media_type, const std::string& bytes);

    const RegistryOptions& options() const { return options_; }

    // "registry:https://host:port/repo": no credentials in it.
    std::string describe() const;
    TransferStats& stats() { return transport_->stats(); }

private:
    // One upload session: POST, then the PUT of the whole body.
    void uploadInSession(const std::string& digest, RequestBody& body);
    struct Endpoint {
        std::string base;       // "https://host:port"
        std::string authority;  // "host:port": the key of its credentials and auth state
    };
    // What a host asked for on its last 401.
    struct HostAuth {
        enum class Scheme { None, Basic, Bearer } scheme = Scheme::None;
        std::string realm;
        std::string service;
    };
    // What a request carried, so a 401 can tell a refused token or password from a missing one.
    struct Authorization {
        std::string header;
        std::string token;
        std::optional<Credentials> basic;
        bool unasked = false;  // Basic sent before the host asked for anything (authorizationFor)
    };
    using Exchange = std::function<HttpResponse(const HttpRequest&)>;

    Endpoint endpoint(size_t index) const;
    // Runs `exchange` with the host's authorization; on a 401 answers the challenge and runs it
    // once more. A second 401 is an error naming the host.
    HttpResponse authorized(const Endpoint& ep, HttpRequest request, const Exchange& exchange);
    Authorization authorizationFor(const Endpoint& ep);
    Authorization answerChallenge(const Endpoint& ep, const HttpResponse& response, const Authorization& used);
    // A token for scope_ and `extra` scopes (what a challenge asked for beyond it: the source
    // repository of a cross-repository mount).
    std::string bearer(const HostAuth& auth, const Endpoint& ep, const std::string& refused,
                       const std::vector<std::string>& extra = {});
    BearerToken fetchToken(const HostAuth& auth, const Endpoint& ep, const std::vector<std::string>& scopes);
    // The range from one endpoint, through its redirect when it has one; `total` gets the blob
    // size when the reply tells it.
    void readFrom(const Endpoint& ep, const std::string& digest, uint64_t offset, std::span<uint8_t> out,
                  uint64_t* total = nullptr, const RangeSink::Arrived& arrived = {});
    uint64_t sizeFrom(const Endpoint& ep, const std::string& digest);
    // Tries the endpoints in order with `work`; throws naming every failure if none succeeds.
    void onSomeEndpoint(const std::function<void(const Endpoint&)>& work);
    // The host itself, for writes.
    Endpoint origin() const { return endpoint(endpoints_.size() - 1); }
    HttpResponse perform(const Endpoint& ep, HttpRequest request);

    RegistryOptions options_;
    std::shared_ptr<RetryingTransport> transport_;
    std::shared_ptr<CredentialStore> credentials_;
    EndpointList endpoints_;  // mirrors, then the host
    TokenCache tokens_;
    std::string scope_;       // "repository:<repo>:pull"

    std::mutex mutex_;
    std::map<std::string, HostAuth> auth_;  // by authority
    // Hosts whose credentials could not be looked up to send unasked (a failing helper): not tried
    // again for every request to a registry that never asks; a challenge looks them up afresh.
    std::set<std::string> unasked_failed_;
    struct Redirect {
        std::string url;
        std::chrono::steady_clock::time_point expires;
    };
    std::map<std::string, Redirect> redirects_;  // by endpoint base + digest
    std::map<std::string, uint64_t> sizes_;      // by digest
    // A cancel of an upload session the registry refused: not asked again (each costs a token).
    std::atomic<bool> cancel_refused_{false};
};

}  // namespace registry
