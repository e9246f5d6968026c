#include "registry/Url.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "format/Error.h"

#include <curl/curl.h>

#include <memory>

namespace registry {

namespace {

struct UrlHandleFree {
    void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
struct CurlStringFree {
    void operator()(char* s) const { curl_free(s); }
};

std::string part(CURLU* handle, CURLUPart which) {
    char* raw = nullptr;
    if (curl_url_get(handle, which, &raw, 0) != CURLUE_OK) return {};
    std::unique_ptr<char, CurlStringFree> owned(raw);
    return owned.get();
}

}  // namespace

Url Url::parse(std::string_view text) {
    std::unique_ptr<CURLU, UrlHandleFree> handle(curl_url());
    if (!handle) rafs::fail("out of memory parsing a URL");
    const std::string copy(text);
    Url url;
    if (curl_url_set(handle.get(), CURLUPART_URL, copy.c_str(), 0) == CURLUE_OK) {
        url.scheme = part(handle.get(), CURLUPART_SCHEME);
        url.authority = part(handle.get(), CURLUPART_HOST);
        const std::string port = part(handle.get(), CURLUPART_PORT);
        if (!port.empty()) url.authority.append(1, ':').append(port);
        url.path = part(handle.get(), CURLUPART_PATH);
        const std::string query = part(handle.get(), CURLUPART_QUERY);
        if (!query.empty()) url.path.append(1, '?').append(query);
    }
    if ((url.scheme != "http" && url.scheme != "https") || url.authority.empty()) {
        rafs::fail("'{}' is not an http:// or https:// URL", withoutQuery(text));
    }
    if (url.path.empty()) url.path.push_back('/');
    return url;
}

std::string withoutQuery(std::string_view url) { return std::string(url.substr(0, url.find('?'))); }

std::string queryEscape(std::string_view value) {
    std::string out;
    for (char c : value) {
        const auto byte = static_cast<unsigned char>(c);
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '.' || c == '~') {
            out += c;
        } else {
            out += fmt::format("%{:02X}", byte);
        }
    }
    return out;
}

bool isLoopbackHost(std::string_view host) {
    in_addr v4{};
    in6_addr v6{};
    const std::string text(host);
    return host == "localhost" || (::inet_pton(AF_INET, text.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127) ||
           (::inet_pton(AF_INET6, text.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6));
}

bool isLoopbackAuthority(std::string_view authority) {
    if (authority.starts_with('[')) {
        const size_t close = authority.find(']');
        return close != std::string_view::npos && isLoopbackHost(authority.substr(1, close - 1));
    }
    return isLoopbackHost(authority.substr(0, authority.find(':')));
}

}  // namespace registry
