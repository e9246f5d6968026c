// fanotify pre-content events (include/uapi/linux/fanotify.h, Linux 6.14+). Defined here because
// the build host's headers may predate FAN_CLASS_PRE_CONTENT and the range info record.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fanotify {

inline constexpr unsigned kClassPreContent = 0x00000008;  // FAN_CLASS_PRE_CONTENT
inline constexpr unsigned kCloexec = 0x00000001;
inline constexpr unsigned kNonblock = 0x00000002;
inline constexpr unsigned kUnlimitedQueue = 0x00000010;
inline constexpr unsigned kUnlimitedMarks = 0x00000020;

inline constexpr unsigned kMarkAdd = 0x00000001;
inline constexpr unsigned kMarkRemove = 0x00000002;

inline constexpr uint64_t kPreAccess = 0x00100000;  // FAN_PRE_ACCESS
inline constexpr uint64_t kQueueOverflow = 0x00004000;

inline constexpr uint8_t kMetadataVersion = 3;
inline constexpr int32_t kNoFd = -1;

struct EventMetadata {
    uint32_t event_len;
    uint8_t vers;
    uint8_t reserved;
    uint16_t metadata_len;
    alignas(8) uint64_t mask;
    int32_t fd;
    int32_t pid;
};
static_assert(sizeof(EventMetadata) == 24);
static_assert(offsetof(EventMetadata, event_len) == 0);
static_assert(offsetof(EventMetadata, vers) == 4);
static_assert(offsetof(EventMetadata, reserved) == 5);
static_assert(offsetof(EventMetadata, metadata_len) == 6);
static_assert(offsetof(EventMetadata, mask) == 8);
static_assert(offsetof(EventMetadata, fd) == 16);
static_assert(offsetof(EventMetadata, pid) == 20);

struct EventInfoHeader {
    uint8_t info_type;
    uint8_t pad;
    uint16_t len;
};
static_assert(sizeof(EventInfoHeader) == 4);
static_assert(offsetof(EventInfoHeader, info_type) == 0);
static_assert(offsetof(EventInfoHeader, pad) == 1);
static_assert(offsetof(EventInfoHeader, len) == 2);

inline constexpr uint8_t kInfoTypeRange = 6;  // FAN_EVENT_INFO_TYPE_RANGE
struct EventInfoRange {
    EventInfoHeader hdr;
    uint32_t pad;
    uint64_t offset;
    uint64_t count;
};
static_assert(sizeof(EventInfoRange) == 24);
static_assert(offsetof(EventInfoRange, hdr) == 0);
static_assert(offsetof(EventInfoRange, pad) == 4);
static_assert(offsetof(EventInfoRange, offset) == 8);
static_assert(offsetof(EventInfoRange, count) == 16);

inline constexpr uint32_t kAllow = 0x01;
inline constexpr uint32_t kDeny = 0x02;
inline constexpr unsigned kErrnoShift = 24;
constexpr uint32_t denyWithErrno(int err) { return kDeny | ((static_cast<uint32_t>(err) & 0xff) << kErrnoShift); }

struct Response {
    int32_t fd;
    uint32_t response;
};
static_assert(sizeof(Response) == 8);
static_assert(offsetof(Response, fd) == 0);
static_assert(offsetof(Response, response) == 4);

}  // namespace fanotify
