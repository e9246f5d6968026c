// cachefiles on-demand mode (include/uapi/linux/cachefiles.h, Linux 5.19+). Defined here so the
// build does not depend on the installed kernel headers' age.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cachefiles {

inline constexpr size_t kMsgMaxSize = 1024;  // CACHEFILES_MSG_MAX_SIZE
inline constexpr unsigned long kIocReadComplete = 0x40049801;  // _IOW(0x98, 1, int)

enum Opcode : uint32_t { kOpen = 0, kClose = 1, kRead = 2 };

struct Msg {
    uint32_t msg_id;
    uint32_t opcode;
    uint32_t len;
    uint32_t object_id;
    // followed by the opcode's payload
};
static_assert(sizeof(Msg) == 16);
static_assert(offsetof(Msg, msg_id) == 0);
static_assert(offsetof(Msg, opcode) == 4);
static_assert(offsetof(Msg, len) == 8);
static_assert(offsetof(Msg, object_id) == 12);

struct Open {
    uint32_t volume_key_size;  // includes the volume key's NUL
    uint32_t cookie_key_size;  // no NUL
    uint32_t fd;
    uint32_t flags;
    // followed by the volume key, then the cookie key
};
static_assert(sizeof(Open) == 16);
static_assert(offsetof(Open, volume_key_size) == 0);
static_assert(offsetof(Open, cookie_key_size) == 4);
static_assert(offsetof(Open, fd) == 8);
static_assert(offsetof(Open, flags) == 12);

struct Read {
    uint64_t off;
    uint64_t len;
};
static_assert(sizeof(Read) == 16);
static_assert(offsetof(Read, off) == 0);
static_assert(offsetof(Read, len) == 8);

inline constexpr unsigned kMaxKeySize = 255;

}  // namespace cachefiles
