#include "registry/RangeSink.h"

#include "registry/RetryPolicy.h"
#include "registry/RetryingTransport.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace registry {

namespace {

std::optional<uint64_t> number(std::string_view text) {
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

constexpr size_t kMaxErrorText = 4096;

}  // namespace

std::optional<ContentRange> parseContentRange(std::string_view value) {
    if (!value.starts_with("bytes ")) return std::nullopt;
    value.remove_prefix(6);
    const size_t dash = value.find('-');
    const size_t slash = value.find('/');
    if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) return std::nullopt;
    auto first = number(value.substr(0, dash));
    auto last = number(value.substr(dash + 1, slash - dash - 1));
    std::string_view total_text = value.substr(slash + 1);
    auto total = total_text == "*" ? std::optional<uint64_t>(0) : number(total_text);
    if (!first || !last || !total || *last < *first) return std::nullopt;
    return ContentRange{*first, *last, *total};
}

void RangeSink::reset() {
    started_ = false;
    skip_ = 0;
    filled_.store(0, std::memory_order_relaxed);
    problem_.reset();
    blob_too_short_ = false;
    cut_ = false;
    error_text_.clear();
}

bool RangeSink::start(const HttpResponse& head) {
    started_ = true;
    if (head.status == 200) {
        skip_ = offset_;
        return true;
    }
    if (head.status != 206) return true;
    const uint64_t last = offset_ + out_.size() - 1;
    auto header = head.header("content-range");
    auto range = header ? parseContentRange(*header) : std::nullopt;
    if (!range) {
        problem_ = fmt::format("206 without a usable Content-Range ({})", header ? std::string(*header) : "none");
    } else if (range->first != offset_ || range->last != last) {
        // A shorter last byte means the blob ends before the range does.
        blob_too_short_ = range->total != 0 && range->total <= last;
        problem_ = range->total != 0 && range->total <= last
                       ? fmt::format("the blob has only {} bytes, range {}-{} asked", range->total, offset_, last)
                       : fmt::format("Content-Range {} for range {}-{}", std::string(*header), offset_, last);
    }
    return !problem_;
}

bool RangeSink::write(const HttpResponse& head, std::span<const uint8_t> piece) {
    if (!started_ && !start(head)) return false;
    if (head.status != 200 && head.status != 206) {
        const size_t keep = std::min(piece.size(), kMaxErrorText - std::min(kMaxErrorText, error_text_.size()));
        error_text_.append(reinterpret_cast<const char*>(piece.data()), keep);
        return true;
    }
    const uint64_t skip = std::min<uint64_t>(skip_, piece.size());
    skip_ -= skip;
    piece = piece.subspan(skip);
    const uint64_t filled = filled_.load(std::memory_order_relaxed);
    const uint64_t room = out_.size() - filled;
    if (head.status == 206 && piece.size() > room) {
        problem_ = fmt::format("more than the {} bytes asked", out_.size());
        return false;
    }
    const size_t take = static_cast<size_t>(std::min<uint64_t>(room, piece.size()));
    if (head.status == 200 && (skip != 0 || take < piece.size())) cut_ = true;
    std::memcpy(out_.data() + filled, piece.data(), take);
    filled_.store(filled + take, std::memory_order_release);
    // A whole blob (200) is cut off once the range is in.
    return !(head.status == 200 && filled + take == out_.size());
}

bool RangeSink::transient(const HttpResponse& response) const {
    const bool ok_status = response.status == 200 || response.status == 206;
    if (ok_status && complete()) return false;
    if (ok_status) return !blob_too_short_;  // cut or refused: the next attempt may do better
    return RetryPolicy::transient(response);
}

}  // namespace registry

namespace registry {

bool getRange(RetryingTransport& transport, HttpRequest request, uint64_t offset, RangeSink& sink, size_t length,
              HttpResponse& last, std::string& why) {
    request.method = "GET";
    request.range = std::pair{offset, offset + length - 1};
    request.sink = &sink;
    last = transport.perform(request, [&] { sink.reset(); }, [&](const HttpResponse& r) { return sink.transient(r); });
    if (last.status == 200) {
        // Also when the pieces received ended exactly at the range's end and the body went on, as
        // its Content-Length tells (without one, such a whole-blob answer goes uncounted).
        const auto whole = last.header("content-length");
        const auto size = whole ? number(*whole) : std::nullopt;
        if (sink.cutFromWholeBlob() || (size && *size > length)) transport.stats().whole_blob_answers++;
    }
    if (sink.complete()) return true;
    if (sink.problem()) {
        why = *sink.problem();
    } else if ((last.status == 200 || last.status == 206) && last.curl_code == 0) {
        why = fmt::format("the body ended after {} of {} bytes", sink.filled(), length);
    } else {
        last.text = sink.errorText();
        why = last.summary();
    }
    return false;
}

std::optional<uint64_t> sizeFromHead(const HttpResponse& head) {
    if (head.curl_code != 0 || head.status != 200) return std::nullopt;
    auto value = head.header("content-length");
    return value ? number(*value) : std::nullopt;
}

}  // namespace registry
