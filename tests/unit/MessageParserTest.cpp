#include "format/Error.h"
#include "daemon/engines/fscache/MessageParser.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

using rafsd::parseMessage;

namespace {

// Builds a message the way the kernel lays it out (include/uapi/linux/cachefiles.h).
class MessageBytes {
public:
    MessageBytes(uint32_t msg_id, uint32_t opcode, uint32_t object_id) {
        const cachefiles::Msg header{msg_id, opcode, 0, object_id};
        append(&header, sizeof(header));
    }
    MessageBytes& append(const void* data, size_t size) {
        const size_t at = bytes_.size();
        bytes_.resize(at + size);
        if (size > 0) std::memcpy(bytes_.data() + at, data, size);
        return *this;
    }
    MessageBytes& append(const std::string& text) { return append(text.data(), text.size()); }
    // Sets the header's len to the current size, as the kernel does.
    std::vector<std::byte> done() {
        const auto len = static_cast<uint32_t>(bytes_.size());
        std::memcpy(bytes_.data() + offsetof(cachefiles::Msg, len), &len, sizeof(len));
        return bytes_;
    }

private:
    std::vector<std::byte> bytes_;
};

std::vector<std::byte> openMessage(const std::string& volume_with_nul, const std::string& cookie,
                                   uint32_t fd = 7) {
    const cachefiles::Open open{static_cast<uint32_t>(volume_with_nul.size()),
                                static_cast<uint32_t>(cookie.size()), fd, 0};
    return MessageBytes(3, cachefiles::kOpen, 9).append(&open, sizeof(open)).append(volume_with_nul).append(cookie).done();
}

std::string errorOf(const std::vector<std::byte>& bytes) {
    try {
        parseMessage(bytes);
    } catch (const rafs::Error& e) {
        return e.what();
    }
    return "(accepted)";
}

}  // namespace

TEST_CASE("OPEN: keys are taken by their exact sizes", "[fscache]") {
    const std::string volume("erofs,domain\0", 13);
    const std::string cookie(64, 'c');
    const auto msg = parseMessage(openMessage(volume, cookie, 42));
    CHECK(msg.opcode == cachefiles::kOpen);
    CHECK(msg.msg_id == 3);
    CHECK(msg.object_id == 9);
    CHECK(msg.volume_key == "erofs,domain");
    CHECK(msg.cookie_key == cookie);
    CHECK(msg.fd == 42);
    CHECK(rafsd::openFdOf(openMessage(volume, cookie, 42)) == 42);
}

TEST_CASE("OPEN: a cookie key may hold any byte, including NUL", "[fscache]") {
    const std::string cookie("a\0b", 3);
    CHECK(parseMessage(openMessage(std::string("erofs,x\0", 8), cookie)).cookie_key == cookie);
}

TEST_CASE("READ and CLOSE decode their payloads", "[fscache]") {
    const cachefiles::Read read{1 << 20, 4096};
    const auto r = parseMessage(MessageBytes(5, cachefiles::kRead, 2).append(&read, sizeof(read)).done());
    CHECK(r.opcode == cachefiles::kRead);
    CHECK(r.offset == 1u << 20);
    CHECK(r.length == 4096);
    CHECK(r.object_id == 2);
    const auto c = parseMessage(MessageBytes(6, cachefiles::kClose, 2).done());
    CHECK(c.opcode == cachefiles::kClose);
    CHECK(rafsd::openFdOf(MessageBytes(6, cachefiles::kClose, 2).done()) == -1);
}

TEST_CASE("malformed messages are rejected with a message naming the fault", "[fscache]") {
    const std::string volume("erofs,x\0", 8);
    SECTION("shorter than the header") {
        CHECK_THAT(errorOf(std::vector<std::byte>(10)), Catch::Contains("shorter than its header"));
    }
    SECTION("longer than the kernel's maximum") {
        std::string big(2000, 'k');
        CHECK_THAT(errorOf(MessageBytes(1, cachefiles::kRead, 1).append(big).done()), Catch::Contains("exceeds"));
    }
    SECTION("length field disagrees with the bytes read") {
        auto bytes = MessageBytes(1, cachefiles::kClose, 1).done();
        bytes.push_back(std::byte{0});
        CHECK_THAT(errorOf(bytes), Catch::Contains("length field"));
    }
    SECTION("unknown opcode") {
        CHECK_THAT(errorOf(MessageBytes(1, 99, 1).done()), Catch::Contains("unknown opcode 99"));
    }
    SECTION("OPEN payload cut short") {
        CHECK_THAT(errorOf(MessageBytes(1, cachefiles::kOpen, 1).append("abc").done()), Catch::Contains("too short"));
    }
    SECTION("OPEN key sizes beyond the bytes present") {
        auto bytes = openMessage(volume, "cookie");
        bytes.pop_back();
        const auto len = static_cast<uint32_t>(bytes.size());
        std::memcpy(bytes.data() + offsetof(cachefiles::Msg, len), &len, sizeof(len));
        CHECK_THAT(errorOf(bytes), Catch::Contains("key bytes"));
    }
    SECTION("OPEN cookie key over 255 bytes") {
        CHECK_THAT(errorOf(openMessage(volume, std::string(256, 'c'))), Catch::Contains("out of range"));
    }
    SECTION("OPEN volume key without its NUL") {
        CHECK_THAT(errorOf(openMessage("erofs,x", "cookie")), Catch::Contains("not NUL-terminated"));
    }
    SECTION("OPEN empty volume key") {
        CHECK_THAT(errorOf(openMessage("", "cookie")), Catch::Contains("out of range"));
    }
    SECTION("OPEN volume key with an inner NUL") {
        CHECK_THAT(errorOf(openMessage(std::string("ero\0s\0", 6), "cookie")), Catch::Contains("NUL byte"));
    }
    SECTION("READ payload of the wrong size") {
        CHECK_THAT(errorOf(MessageBytes(1, cachefiles::kRead, 1).append("12345678").done()),
                   Catch::Contains("expected 16"));
    }
    SECTION("READ range that overflows") {
        const cachefiles::Read read{UINT64_MAX - 10, 4096};
        CHECK_THAT(errorOf(MessageBytes(1, cachefiles::kRead, 1).append(&read, sizeof(read)).done()),
                   Catch::Contains("overflows"));
    }
    SECTION("CLOSE with a payload") {
        CHECK_THAT(errorOf(MessageBytes(1, cachefiles::kClose, 1).append("x").done()),
                   Catch::Contains("unexpected 1-byte payload"));
    }
}

TEST_CASE("openFdOf finds the fd even when the rest of an OPEN is malformed", "[fscache]") {
    auto bytes = openMessage("erofs,x", "cookie", 11);  // volume key lacks its NUL
    CHECK_THROWS_AS(parseMessage(bytes), rafs::Error);
    CHECK(rafsd::openFdOf(bytes) == 11);
    CHECK(rafsd::openFdOf(std::vector<std::byte>(8)) == -1);
}
