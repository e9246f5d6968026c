#include "daemon/engines/fscache/MessageParser.h"

#include "format/Error.h"

#include <climits>
#include <cstring>

namespace rafsd {

namespace {

using rafs::fail;

template <typename T>
T load(std::span<const std::byte> bytes, size_t offset) {
    T value;
    std::memcpy(&value, bytes.data() + offset, sizeof(T));
    return value;
}

constexpr size_t kHeader = sizeof(cachefiles::Msg);

}  // namespace

int openFdOf(std::span<const std::byte> bytes) {
    if (bytes.size() < kHeader + sizeof(cachefiles::Open)) return -1;
    if (load<uint32_t>(bytes, offsetof(cachefiles::Msg, opcode)) != cachefiles::kOpen) return -1;
    const auto fd = load<uint32_t>(bytes, kHeader + offsetof(cachefiles::Open, fd));
    return fd > INT_MAX ? -1 : static_cast<int>(fd);
}

CachefilesMessage parseMessage(std::span<const std::byte> bytes) {
    if (bytes.size() < kHeader) fail("cachefiles message of {} bytes is shorter than its header", bytes.size());
    if (bytes.size() > cachefiles::kMsgMaxSize) {
        fail("cachefiles message of {} bytes exceeds the maximum of {}", bytes.size(), cachefiles::kMsgMaxSize);
    }
    const auto header = load<cachefiles::Msg>(bytes, 0);
    if (header.len != bytes.size()) {
        fail("cachefiles message {}: length field {} but {} bytes were read", header.msg_id, header.len, bytes.size());
    }
    CachefilesMessage msg;
    msg.msg_id = header.msg_id;
    msg.object_id = header.object_id;
    const auto payload = bytes.subspan(kHeader);
    switch (header.opcode) {
    case cachefiles::kOpen: {
        msg.opcode = cachefiles::kOpen;
        if (payload.size() < sizeof(cachefiles::Open)) {
            fail("cachefiles OPEN {}: payload of {} bytes is too short", header.msg_id, payload.size());
        }
        const auto open = load<cachefiles::Open>(payload, 0);
        if (open.volume_key_size == 0 || open.volume_key_size > cachefiles::kMaxKeySize + 1 ||
            open.cookie_key_size > cachefiles::kMaxKeySize) {
            fail("cachefiles OPEN {}: key sizes {} and {} are out of range", header.msg_id, open.volume_key_size,
                 open.cookie_key_size);
        }
        const auto keys = payload.subspan(sizeof(cachefiles::Open));
        if (keys.size() != size_t{open.volume_key_size} + open.cookie_key_size) {
            fail("cachefiles OPEN {}: {} key bytes but key sizes {} + {}", header.msg_id, keys.size(),
                 open.volume_key_size, open.cookie_key_size);
        }
        const auto* chars = reinterpret_cast<const char*>(keys.data());
        if (chars[open.volume_key_size - 1] != '\0') {
            fail("cachefiles OPEN {}: volume key is not NUL-terminated", header.msg_id);
        }
        msg.volume_key.assign(chars, open.volume_key_size - 1);
        if (msg.volume_key.find('\0') != std::string::npos) {
            fail("cachefiles OPEN {}: volume key contains a NUL byte", header.msg_id);
        }
        msg.cookie_key.assign(chars + open.volume_key_size, open.cookie_key_size);
        if (open.fd > INT_MAX) fail("cachefiles OPEN {}: fd {} is out of range", header.msg_id, open.fd);
        msg.fd = static_cast<int>(open.fd);
        return msg;
    }
    case cachefiles::kClose:
        msg.opcode = cachefiles::kClose;
        if (!payload.empty()) fail("cachefiles CLOSE {}: unexpected {}-byte payload", header.msg_id, payload.size());
        return msg;
    case cachefiles::kRead: {
        msg.opcode = cachefiles::kRead;
        if (payload.size() != sizeof(cachefiles::Read)) {
            fail("cachefiles READ {}: payload of {} bytes, expected {}", header.msg_id, payload.size(),
                 sizeof(cachefiles::Read));
        }
        const auto read = load<cachefiles::Read>(payload, 0);
        if (read.len > UINT64_MAX - read.off) {
            fail("cachefiles READ {}: range {}+{} overflows", header.msg_id, read.off, read.len);
        }
        msg.offset = read.off;
        msg.length = read.len;
        return msg;
    }
    default: fail("cachefiles message {}: unknown opcode {}", header.msg_id, header.opcode);
    }
}

}  // namespace rafsd
