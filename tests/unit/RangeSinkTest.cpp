#include "registry/RangeSink.h"

#include <catch2/catch.hpp>

#include <numeric>
#include <vector>

using registry::HttpResponse;
using registry::RangeSink;

namespace {

HttpResponse head(long status, std::string content_range = {}) {
    HttpResponse r;
    r.status = status;
    if (!content_range.empty()) r.headers.emplace_back("content-range", content_range);
    return r;
}

std::vector<uint8_t> blob(size_t size) {
    std::vector<uint8_t> b(size);
    std::iota(b.begin(), b.end(), uint8_t{0});
    return b;
}

}  // namespace

TEST_CASE("Content-Range", "[range]") {
    auto r = registry::parseContentRange("bytes 10-19/100");
    REQUIRE(r);
    CHECK((r->first == 10 && r->last == 19 && r->total == 100));
    CHECK(registry::parseContentRange("bytes 0-0/*")->total == 0);
    CHECK_FALSE(registry::parseContentRange("bytes */100"));
    CHECK_FALSE(registry::parseContentRange("bytes 9-3/100"));
    CHECK_FALSE(registry::parseContentRange("items 0-1/2"));
}

TEST_CASE("a 206 for exactly the range fills the buffer", "[range]") {
    auto b = blob(100);
    std::vector<uint8_t> out(10);
    RangeSink sink(10, out);
    auto h = head(206, "bytes 10-19/100");
    CHECK(sink.write(h, std::span(b).subspan(10, 4)));
    CHECK_FALSE(sink.complete());
    CHECK(sink.transient(h));  // cut here: worth another attempt
    CHECK(sink.write(h, std::span(b).subspan(14, 6)));
    CHECK(sink.complete());
    CHECK(std::equal(out.begin(), out.end(), b.begin() + 10));
    CHECK_FALSE(sink.transient(h));
}

TEST_CASE("a 206 for another range, or too long, is refused", "[range]") {
    auto b = blob(100);
    std::vector<uint8_t> out(10);
    RangeSink sink(10, out);
    CHECK_FALSE(sink.write(head(206, "bytes 0-9/100"), std::span(b).first(10)));
    CHECK(sink.problem());
    sink.reset();
    auto h = head(206, "bytes 10-19/100");
    CHECK_FALSE(sink.write(h, std::span(b).subspan(10, 11)));
    CHECK(sink.problem());
    sink.reset();
    // The blob ends before the range: no retry mends that.
    auto shorter = head(206, "bytes 10-14/15");
    CHECK_FALSE(sink.write(shorter, std::span(b).subspan(10, 5)));
    CHECK_FALSE(sink.transient(shorter));
}

TEST_CASE("a 200 (Range ignored) is cut to the range, then stopped", "[range]") {
    auto b = blob(100);
    std::vector<uint8_t> out(10);
    RangeSink sink(45, out);
    auto h = head(200);
    CHECK(sink.write(h, std::span(b).first(40)));
    CHECK_FALSE(sink.write(h, std::span(b).subspan(40, 30)));  // the range is in: stop
    CHECK(sink.complete());
    CHECK(std::equal(out.begin(), out.end(), b.begin() + 45));
    CHECK(sink.cutFromWholeBlob());
    // The whole blob asked for and given: a 200 as good as a 206.
    std::vector<uint8_t> all(100);
    RangeSink whole(0, all);
    CHECK_FALSE(whole.write(h, std::span(b)));
    CHECK(whole.complete());
    CHECK_FALSE(whole.cutFromWholeBlob());
}

TEST_CASE("other statuses keep their body for the message", "[range]") {
    std::vector<uint8_t> out(10);
    RangeSink sink(0, out);
    std::string text = R"({"errors":[{"code":"BLOB_UNKNOWN"}]})";
    auto h = head(404);
    CHECK(sink.write(h, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size())));
    CHECK(sink.errorText() == text);
    CHECK_FALSE(sink.complete());
    CHECK_FALSE(sink.transient(h));
    CHECK(sink.transient(head(503)));
}

// The caller is woken (arrivalWanted) once the count it asked for last is in, not for every piece;
// a retried transfer starts the count again but keeps what was asked, as what lies below came
// before.
TEST_CASE("a sink followed as it fills asks for the caller only at the count it was given", "[range]") {
    auto b = blob(100);
    std::vector<uint8_t> out(100);
    std::vector<size_t> told;
    RangeSink sink(0, out, [&](size_t filled) {
        told.push_back(filled);
        return filled < 60 ? size_t{60} : SIZE_MAX;
    });
    const HttpResponse r = head(206, "bytes 0-99/100");
    CHECK_FALSE(sink.arrivalWanted());
    REQUIRE(sink.write(r, std::span(b).first(10)));
    CHECK(sink.arrivalWanted());  // the first bytes: the caller says what it needs
    sink.arrived();
    CHECK_FALSE(sink.arrivalWanted());
    REQUIRE(sink.write(r, std::span(b).subspan(10, 40)));
    CHECK_FALSE(sink.arrivalWanted());  // 50 of the 60 asked for
    REQUIRE(sink.write(r, std::span(b).subspan(50, 20)));
    CHECK(sink.arrivalWanted());
    sink.arrived();
    CHECK(told == std::vector<size_t>{10, 70});
    CHECK_FALSE(sink.arrivalWanted());  // nothing more asked for

    sink.reset();
    REQUIRE(sink.write(r, std::span(b).first(100)));
    CHECK_FALSE(sink.arrivalWanted());
    CHECK(sink.complete());
    CHECK(out == b);
    // Unfollowed sinks never wake their caller.
    std::vector<uint8_t> other(100);
    RangeSink plain(0, other);
    REQUIRE(plain.write(r, std::span(b).first(100)));
    CHECK_FALSE(plain.arrivalWanted());
}
