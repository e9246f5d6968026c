#include "registry/HttpBlobClient.h"

#include "format/Error.h"
#include "registry/RangeSink.h"
#include "registry/Url.h"

namespace registry {

uint64_t probeBlobSize(RetryingTransport& transport, HttpRequest request) {
    request.method = "HEAD";
    HttpResponse head = transport.perform(request);
    if (auto size = sizeFromHead(head)) return *size;
    // 403: also what object storage answers a HEAD of a URL signed for GET, where a redirect led.
    if (head.curl_code != 0 || (head.status != 200 && head.status != 403 && head.status != 405)) {
        transport.stats().failures++;
        rafs::fail("HEAD {}: {}", withoutQuery(request.url), head.summary());
    }
    // No length, or HEAD not allowed: a one-byte GET tells the total in its Content-Range (or
    // fails with the refusal of its own).
    uint8_t byte = 0;
    RangeSink sink(0, {&byte, 1});
    HttpResponse last;
    std::string why;
    if (!getRange(transport, request, 0, sink, 1, last, why)) {
        transport.stats().failures++;
        rafs::fail("GET {} bytes 0-0: {}", withoutQuery(request.url), why);
    }
    auto range = last.header("content-range");
    auto parsed = range ? parseContentRange(*range) : std::nullopt;
    if (!parsed || parsed->total == 0) rafs::fail("{}: the server tells no size (no Content-Length, no Content-Range)", withoutQuery(request.url));
    return parsed->total;
}

HttpBlobClient::HttpBlobClient(std::string base, std::shared_ptr<RetryingTransport> transport)
    : base_(std::move(base)), transport_(std::move(transport)) {
    Url::parse(base_);
}

uint64_t HttpBlobClient::blobSize(const std::string& name, bool ask) {
    if (!ask) {
        std::lock_guard lock(mutex_);
        if (auto it = sizes_.find(name); it != sizes_.end()) return it->second;
    }
    const uint64_t size = probeBlobSize(*transport_, requestFor(name));
    std::lock_guard lock(mutex_);
    sizes_[name] = size;
    return size;
}

HttpRequest HttpBlobClient::requestFor(const std::string& name) const {
    HttpRequest request;
    request.url = base_ + "/" + name;
    // A web server may send a blob elsewhere (a mirror, signed object storage). These requests
    // carry no credentials, so following leaks none.
    request.follow_redirects = true;
    return request;
}

void HttpBlobClient::readBlob(const std::string& name, uint64_t offset, std::span<uint8_t> out,
                              const RangeSink::Arrived& arrived) {
    if (out.empty()) return;
    const HttpRequest request = requestFor(name);
    RangeSink sink(offset, out, arrived);
    HttpResponse last;
    std::string why;
    if (!getRange(*transport_, request, offset, sink, out.size(), last, why)) {
        transport_->stats().failures++;
        rafs::fail("GET {} bytes {}-{}: {}", withoutQuery(request.url), offset, offset + out.size() - 1, why);
    }
}

}  // namespace registry
