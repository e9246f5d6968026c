// An http:// or https:// URL taken apart by libcurl's URL parser: scheme, authority (host[:port],
// the key of per-host settings), and the rest.
#pragma once

#include <string>
#include <string_view>

namespace registry {

struct Url {
    std::string scheme;     // "http" or "https"
    std::string authority;  // "host" or "host:port", as written
    std::string path;       // from the first '/', with any query

    // Throws rafs::Error naming the URL if it is not an absolute http(s) URL with a host.
    static Url parse(std::string_view text);
    std::string str() const { return scheme + "://" + authority + path; }
};

// For messages: the URL without its query, which may carry a storage signature.
std::string withoutQuery(std::string_view url);

// Whether `host` (a name or address, IPv6 without brackets) is this machine's loopback: an
// address in 127.0.0.0/8, ::1, or "localhost"; not a name that merely starts like one
// ("127.example.org" resolves anywhere).
bool isLoopbackHost(std::string_view host);
// The same for an authority, "host", "host:port" or "[v6]:port".
bool isLoopbackAuthority(std::string_view authority);

// A URL-encoded query value.
std::string queryEscape(std::string_view value);

}  // namespace registry
