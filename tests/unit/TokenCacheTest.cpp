#include "registry/TokenCache.h"

#include "format/Error.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

using registry::BearerToken;
using registry::TokenCache;

TEST_CASE("one fetch however many requests wait for the key", "[token]") {
    TokenCache cache;
    std::atomic<int> fetches{0};
    auto fetch = [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return BearerToken{"t" + std::to_string(++fetches), std::chrono::seconds(60)};
    };
    std::vector<std::thread> threads;
    std::vector<std::string> got(16);
    for (size_t i = 0; i < got.size(); ++i) threads.emplace_back([&, i] { got[i] = cache.get("k", fetch); });
    for (auto& t : threads) t.join();
    CHECK(fetches == 1);
    for (const auto& token : got) CHECK(token == "t1");
    CHECK(cache.get("k", fetch) == "t1");
    CHECK(cache.get("other", fetch) == "t2");
}

TEST_CASE("a refused token is fetched again once, by whoever saw the refusal first", "[token]") {
    TokenCache cache;
    int fetches = 0;
    auto fetch = [&] { return BearerToken{"t" + std::to_string(++fetches), std::chrono::seconds(60)}; };
    CHECK(cache.get("k", fetch) == "t1");
    CHECK(cache.get("k", fetch, "t1") == "t2");
    // A request that still carried t1 when t2 was fetched gets t2, no third fetch.
    CHECK(cache.get("k", fetch, "t1") == "t2");
    CHECK(fetches == 2);
}

TEST_CASE("a token is renewed before it expires", "[token]") {
    TokenCache cache;
    int fetches = 0;
    auto fetch = [&] { return BearerToken{"t" + std::to_string(++fetches), std::chrono::seconds(1)}; };
    CHECK(TokenCache::renewalMargin(std::chrono::seconds(1)) == std::chrono::milliseconds(200));
    CHECK(TokenCache::renewalMargin(std::chrono::seconds(3600)) == std::chrono::seconds(30));
    CHECK(cache.get("k", fetch) == "t1");
    CHECK(cache.get("k", fetch) == "t1");
    std::this_thread::sleep_for(std::chrono::milliseconds(850));
    CHECK(cache.get("k", fetch) == "t2");
}

TEST_CASE("a failed fetch fails every waiter, and the next request tries again", "[token]") {
    TokenCache cache;
    std::atomic<int> fetches{0};
    auto failing = [&]() -> BearerToken {
        ++fetches;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        rafs::fail("token service down");
    };
    std::atomic<int> failed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&] {
            try {
                cache.get("k", failing);
            } catch (const rafs::Error& e) {
                if (std::string(e.what()) == "token service down") ++failed;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(failed == 8);
    CHECK(fetches <= 2);  // a thread arriving after the first fetch ended starts its own
    CHECK(cache.get("k", [] { return BearerToken{"ok", std::chrono::seconds(60)}; }) == "ok");
}
