#include "registry/RetryingTransport.h"

#include <thread>

namespace registry {

RetryingTransport::RetryingTransport(std::shared_ptr<HttpTransport> transport, RetryPolicy policy, std::string proxy,
                                     std::chrono::milliseconds proxy_skip, std::shared_ptr<TransferStats> stats)
    : transport_(std::move(transport)), policy_(policy), stats_(std::move(stats)) {
    if (!proxy.empty()) routes_.emplace(std::vector<std::string>{std::move(proxy), ""}, proxy_skip);
}

HttpResponse RetryingTransport::perform(HttpRequest request, const std::function<void()>& before_attempt,
                                        const Judge& transient) {
    uint32_t retries = 0;  // spent, of the policy's
    bool fell_back = false;
    for (;;) {
        const size_t route = routes_ ? routes_->order().front() : 0;
        request.proxy = routes_ ? routes_->at(route) : "";
        if (before_attempt) before_attempt();
        if (request.body != nullptr) request.body->rewind();
        HttpResponse response = transport_->perform(request);
        stats_->requests++;
        stats_->bytes += response.body_bytes;
        stats_->recordLatency(response.elapsed);
        const bool failed = transient(response);
        if (routes_ && !request.proxy.empty()) {
            if (failed) routes_->failed(route);
            else routes_->succeeded(route);
            if (failed && !fell_back) {
                // Through the proxy and failed: the direct route at once, once per request,
                // without spending one of the policy's retries.
                fell_back = true;
                stats_->retries++;
                continue;
            }
        }
        if (!failed || retries >= policy_.options().retries) return response;
        stats_->retries++;
        std::this_thread::sleep_for(policy_.delay(retries++, response));
    }
}

}  // namespace registry
