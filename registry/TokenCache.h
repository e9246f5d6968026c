// Bearer tokens by key (token service, service name and scope): a cached token is used until
// shortly before it expires, or until a server refuses it; then one fetch runs, however many
// requests are waiting for the key, and they all get its result.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace registry {

struct BearerToken {
    std::string value;
    std::chrono::seconds lifetime{60};
};

class TokenCache {
public:
    using Clock = std::chrono::steady_clock;
    using Fetch = std::function<BearerToken()>;

    // The token for `key`: the cached one, unless it expires within its renewal margin or equals
    // `refused` (a server just answered 401 to it); otherwise the result of one `fetch` (its
    // exception, if it throws, goes to every request that waited for it).
    std::string get(const std::string& key, const Fetch& fetch, const std::string& refused = {});

    // Renew this long before expiry: a fifth of the lifetime, at most 30 s, so a token is not
    // sent when it is about to lapse.
    static std::chrono::milliseconds renewalMargin(std::chrono::seconds lifetime);

private:
    struct Entry {
        std::string token;
        Clock::time_point renew_at{};
        bool fetching = false;
        uint64_t generation = 0;  // fetches completed
        std::exception_ptr error;  // of the last fetch
    };

    std::mutex mutex_;
    std::condition_variable done_;
    std::map<std::string, Entry> entries_;
};

}  // namespace registry
