// The body of a ranged GET (`Range: bytes=first-last`) into the caller's buffer. A 206 must carry
// a Content-Range for exactly that range; a 200 (Range ignored) is the whole blob, from which the
// range is cut, stopping the transfer once it is in. Anything short is a cut transfer. Bodies of
// other statuses are kept (a little) for the error message.
#pragma once

#include "registry/HttpTransport.h"

#include <atomic>
#include <functional>
#include <optional>
#include <span>
#include <string>

namespace registry {

class RangeSink : public BodySink {
public:
    // Told how many bytes at the start of `out` are in, on the thread that asked for the range,
    // while the transfer goes on (BodySink::arrived); the count starts again from 0 when a retried
    // transfer writes them again. Returns the count at which to be told next (SIZE_MAX: never):
    // each call wakes that thread, which is not worth it for every piece of a fast transfer.
    // Must not throw.
    using Arrived = std::function<size_t(size_t filled)>;

    RangeSink(uint64_t offset, std::span<uint8_t> out, Arrived arrived = {})
        : offset_(offset), out_(out), arrived_(std::move(arrived)) {}

    bool write(const HttpResponse& head, std::span<const uint8_t> piece) override;
    bool arrivalWanted() const override {
        return arrived_ && filled_.load(std::memory_order_relaxed) >= wanted_.load(std::memory_order_relaxed);
    }
    void arrived() noexcept override {
        wanted_.store(arrived_(static_cast<size_t>(filled_.load(std::memory_order_acquire))), std::memory_order_relaxed);
    }
    void reset();

    // All bytes of the range arrived (2xx).
    bool complete() const { return filled_ == out_.size() && !problem_; }
    // Why a 2xx reply was refused (a Content-Range for another range, a longer body); nullopt if
    // it was not.
    const std::optional<std::string>& problem() const { return problem_; }
    // Of a non-2xx reply, for HttpResponse::summary().
    const std::string& errorText() const { return error_text_; }
    uint64_t filled() const { return filled_.load(std::memory_order_relaxed); }
    // A 200 whose body held bytes outside the range (the server ignored Range): it was cut.
    bool cutFromWholeBlob() const { return cut_; }

    // Whether a ranged GET ended in a way worth another attempt: transient by RetryPolicy, or a
    // 2xx reply that stopped short or was refused.
    bool transient(const HttpResponse& response) const;

private:
    bool start(const HttpResponse& head);

    uint64_t offset_;
    std::span<uint8_t> out_;
    Arrived arrived_;
    bool started_ = false;
    uint64_t skip_ = 0;    // body bytes before the range (200)
    // Written by the transport's thread, read by arrived() on the caller's meanwhile: the bytes
    // below it are in.
    std::atomic<uint64_t> filled_{0};
    // What arrived_ asked for last; a retried transfer keeps it, as what lies below came before.
    std::atomic<uint64_t> wanted_{1};
    std::optional<std::string> problem_;
    bool blob_too_short_ = false;  // a problem no retry mends
    bool cut_ = false;
    std::string error_text_;
};

// "bytes first-last/total" -> (first, last, total; total 0 if '*').
struct ContentRange {
    uint64_t first = 0;
    uint64_t last = 0;
    uint64_t total = 0;
};
std::optional<ContentRange> parseContentRange(std::string_view value);

}  // namespace registry

namespace registry {

class RetryingTransport;

// GETs `request` with Range for the sink's bytes, retrying while RangeSink::transient says so.
// True if the range arrived; otherwise `why` says what went wrong (status, or transfer error).
bool getRange(RetryingTransport& transport, HttpRequest request, uint64_t offset, RangeSink& sink, size_t length,
              HttpResponse& last, std::string& why);

// A blob's size from a HEAD reply: Content-Length of a 200; nullopt without one.
std::optional<uint64_t> sizeFromHead(const HttpResponse& head);

}  // namespace registry
