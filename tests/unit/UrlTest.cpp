#include "registry/Url.h"

#include <catch2/catch.hpp>

using registry::isLoopbackAuthority;
using registry::isLoopbackHost;

TEST_CASE("url: loopback hosts are addresses, not names that look like them", "[url]") {
    for (const char* host : {"127.0.0.1", "127.1.2.3", "::1", "localhost"}) {
        INFO(host);
        CHECK(isLoopbackHost(host));
    }
    for (const char* host : {"127.example.org", "10.0.0.1", "::2", "localhost.example", "", "128.0.0.1"}) {
        INFO(host);
        CHECK_FALSE(isLoopbackHost(host));
    }
    for (const char* authority : {"127.0.0.1:5000", "[::1]:443", "localhost:80", "127.0.0.2"}) {
        INFO(authority);
        CHECK(isLoopbackAuthority(authority));
    }
    for (const char* authority : {"127.example.org:5000", "[::2]:443", "[::1", "registry:5000"}) {
        INFO(authority);
        CHECK_FALSE(isLoopbackAuthority(authority));
    }
}
