// HttpTransport with retries (RetryPolicy), the optional proxy with its fallback to the direct
// route, and the counters of TransferStats. Every network request of a client goes through here.
#pragma once

#include "registry/EndpointList.h"
#include "registry/HttpTransport.h"
#include "registry/RetryPolicy.h"
#include "registry/TransferStats.h"

#include <functional>
#include <memory>
#include <optional>

namespace registry {

class RetryingTransport {
public:
    // `proxy`: an http:// URL, or empty for none. A proxy that fails is skipped for `proxy_skip`
    // and the request goes direct meanwhile.
    RetryingTransport(std::shared_ptr<HttpTransport> transport, RetryPolicy policy, std::string proxy,
                      std::chrono::milliseconds proxy_skip, std::shared_ptr<TransferStats> stats);

    // Whether a response is a transient failure worth another attempt.
    using Judge = std::function<bool(const HttpResponse&)>;

    // Attempts `request` until it is not a transient failure or the retries are spent; returns the
    // last response. `before_attempt` runs before each (a sink starts over).
    HttpResponse perform(HttpRequest request, const std::function<void()>& before_attempt = {},
                         const Judge& transient = RetryPolicy::transient);

    TransferStats& stats() { return *stats_; }
    const RetryPolicy& policy() const { return policy_; }

private:
    std::shared_ptr<HttpTransport> transport_;
    RetryPolicy policy_;
    std::optional<EndpointList> routes_;  // {proxy, direct}; none without a proxy
    std::shared_ptr<TransferStats> stats_;
};

}  // namespace registry
