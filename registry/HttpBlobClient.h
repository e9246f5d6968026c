// Blobs on a plain HTTP(S) server: blob <name> is <base>/<name>, its size from HEAD
// (Content-Length) or from the Content-Range of a one-byte GET, its bytes from range GETs; the
// server's redirects are followed (HttpRequest::follow_redirects).
#pragma once

#include "registry/RangeSink.h"
#include "registry/RetryingTransport.h"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>

namespace registry {

class HttpBlobClient {
public:
    // `base`: an http(s) URL without a trailing '/'.
    HttpBlobClient(std::string base, std::shared_ptr<RetryingTransport> transport);

    // Throws rafs::Error naming the URL and what went wrong. Remembered once known.
    // `ask`: a HEAD now, whatever was known (the answer is kept for later calls).
    uint64_t blobSize(const std::string& name, bool ask = false);
    // Exactly out.size() bytes at `offset`; throws rafs::Error naming the URL and the range.
    // `arrived`, if set, follows the range as it comes in (RangeSink::Arrived).
    void readBlob(const std::string& name, uint64_t offset, std::span<uint8_t> out,
                  const RangeSink::Arrived& arrived = {});

    const std::string& base() const { return base_; }
    TransferStats& stats() { return transport_->stats(); }

private:
    HttpRequest requestFor(const std::string& name) const;

    std::string base_;
    std::shared_ptr<RetryingTransport> transport_;
    std::mutex mutex_;
    std::map<std::string, uint64_t> sizes_;
};

// The size of the blob at `request.url`: HEAD, else a one-byte range GET's Content-Range. Shared
// by the http and registry clients; throws rafs::Error "HEAD <url>: <why>".
uint64_t probeBlobSize(RetryingTransport& transport, HttpRequest request);

}  // namespace registry
