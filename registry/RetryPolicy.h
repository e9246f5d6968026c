// When a failed request is worth another attempt, and how long to wait first: connection errors,
// timeouts, cut bodies, 5xx, 408 and 429 are; exponential backoff with jitter, or the server's
// Retry-After (capped) when it gives one.
#pragma once

#include "registry/HttpTransport.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace registry {

struct RetryOptions {
    uint32_t retries = 4;                             // attempts after the first
    std::chrono::milliseconds backoff_base{100};      // before the first retry, doubling
    std::chrono::milliseconds backoff_max{5000};
    std::chrono::seconds retry_after_max{30};         // a longer Retry-After is cut to this
};

class RetryPolicy {
public:
    explicit RetryPolicy(RetryOptions options) : options_(options) {}

    // Whether a response is a transient failure. A response stopped by its sink is judged by
    // the caller, which knows why.
    static bool transient(const HttpResponse& response);
    // Before retry number `retry` (0 for the first retry) after `response`.
    std::chrono::milliseconds delay(uint32_t retry, const HttpResponse& response) const;
    // Retry-After: delta seconds or an HTTP date; nullopt if unparsable.
    static std::optional<std::chrono::seconds> parseRetryAfter(std::string_view value,
                                                               std::chrono::system_clock::time_point now);

    const RetryOptions& options() const { return options_; }

private:
    RetryOptions options_;
};

}  // namespace registry
