#include "registry/RetryPolicy.h"

#include <catch2/catch.hpp>
#include <curl/curl.h>

using namespace std::chrono;
using registry::HttpResponse;
using registry::RetryPolicy;

namespace {

HttpResponse withStatus(long status) {
    HttpResponse r;
    r.status = status;
    return r;
}

HttpResponse withCurlError(CURLcode code) {
    HttpResponse r;
    r.curl_code = code;
    return r;
}

}  // namespace

TEST_CASE("transient failures: connection errors, cut bodies, 5xx, 408, 429", "[retry]") {
    for (long s : {500L, 502L, 503L, 504L, 408L, 429L}) CHECK(RetryPolicy::transient(withStatus(s)));
    for (long s : {200L, 206L, 301L, 400L, 401L, 403L, 404L, 416L}) CHECK_FALSE(RetryPolicy::transient(withStatus(s)));
    for (CURLcode c : {CURLE_COULDNT_CONNECT, CURLE_PARTIAL_FILE, CURLE_OPERATION_TIMEDOUT, CURLE_RECV_ERROR,
                       CURLE_SEND_ERROR, CURLE_GOT_NOTHING}) {
        CHECK(RetryPolicy::transient(withCurlError(c)));
    }
    for (CURLcode c : {CURLE_PEER_FAILED_VERIFICATION, CURLE_COULDNT_RESOLVE_HOST, CURLE_UNSUPPORTED_PROTOCOL}) {
        CHECK_FALSE(RetryPolicy::transient(withCurlError(c)));
    }
}

TEST_CASE("Retry-After in seconds or as an HTTP date", "[retry]") {
    const auto now = system_clock::from_time_t(1445412480);  // Wed, 21 Oct 2015 07:28:00 GMT
    CHECK(RetryPolicy::parseRetryAfter("120", now) == seconds(120));
    CHECK(RetryPolicy::parseRetryAfter("0", now) == seconds(0));
    CHECK(RetryPolicy::parseRetryAfter("Wed, 21 Oct 2015 07:28:30 GMT", now) == seconds(30));
    CHECK(RetryPolicy::parseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", now) == seconds(0));
    CHECK_FALSE(RetryPolicy::parseRetryAfter("-5", now));
    CHECK_FALSE(RetryPolicy::parseRetryAfter("soon", now));
    CHECK_FALSE(RetryPolicy::parseRetryAfter("12s", now));
}

TEST_CASE("backoff doubles with jitter up to the cap; Retry-After wins, capped", "[retry]") {
    registry::RetryOptions options;
    options.backoff_base = milliseconds(100);
    options.backoff_max = milliseconds(1000);
    options.retry_after_max = seconds(5);
    RetryPolicy policy(options);
    for (int i = 0; i < 50; ++i) {
        auto first = policy.delay(0, withStatus(503));
        CHECK((first >= milliseconds(50) && first <= milliseconds(100)));
        auto third = policy.delay(2, withStatus(503));
        CHECK((third >= milliseconds(200) && third <= milliseconds(400)));
        auto late = policy.delay(30, withStatus(503));
        CHECK((late >= milliseconds(500) && late <= milliseconds(1000)));
    }
    HttpResponse r = withStatus(429);
    r.headers.emplace_back("retry-after", "2");
    CHECK(policy.delay(0, r) == seconds(2));
    r.headers.back().second = "3600";
    CHECK(policy.delay(0, r) == seconds(5));
}
