#include "registry/RetryPolicy.h"

#include <curl/curl.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <random>

namespace registry {

bool RetryPolicy::transient(const HttpResponse& response) {
    // (A reply cut off as too large ends in CURLE_WRITE_ERROR: not transient, below.)
    // A final answer, however its transfer ended.
    if (response.status >= 400 && response.status < 500 && response.status != 408 && response.status != 429) {
        return false;
    }
    switch (static_cast<CURLcode>(response.curl_code)) {
    case CURLE_OK:
        return response.status >= 500 || response.status == 408 || response.status == 429;
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:  // also a reset during the handshake
    case CURLE_WEIRD_SERVER_REPLY:
        return true;
    default:
        return false;
    }
}

std::chrono::milliseconds RetryPolicy::delay(uint32_t retry, const HttpResponse& response) const {
    if (auto value = response.header("retry-after")) {
        if (auto seconds = parseRetryAfter(*value, std::chrono::system_clock::now())) {
            return std::chrono::milliseconds(std::min(*seconds, options_.retry_after_max));
        }
    }
    const auto ceiling = std::min<int64_t>(options_.backoff_max.count(),
                                           options_.backoff_base.count() << std::min<uint32_t>(retry, 20));
    // Half fixed, half random: clients that failed together do not come back together.
    thread_local std::mt19937 random{std::random_device{}()};
    std::uniform_int_distribution<int64_t> jitter(0, std::max<int64_t>(0, ceiling / 2));
    return std::chrono::milliseconds(ceiling - ceiling / 2 + jitter(random));
}

std::optional<std::chrono::seconds> RetryPolicy::parseRetryAfter(std::string_view value,
                                                                 std::chrono::system_clock::time_point now) {
    int64_t seconds = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec == std::errc() && end == value.data() + value.size() && seconds >= 0) return std::chrono::seconds(seconds);
    // IMF-fixdate, e.g. "Wed, 21 Oct 2015 07:28:00 GMT".
    std::tm tm{};
    const std::string copy(value);
    const char* rest = strptime(copy.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (rest == nullptr || *rest != '\0') return std::nullopt;
    const auto when = std::chrono::system_clock::from_time_t(timegm(&tm));
    return std::max(std::chrono::seconds(0), std::chrono::duration_cast<std::chrono::seconds>(when - now));
}

}  // namespace registry
