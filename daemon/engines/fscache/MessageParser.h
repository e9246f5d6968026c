// Decodes one request read from /dev/cachefiles in on-demand mode (include/uapi/linux/cachefiles.h, fs/cachefiles/ondemand.c). The kernel
// is trusted, but a parser that never reads past what it was given turns an ABI mismatch (another
// kernel's layout, a truncated read) into a one-line Error instead of a crash.
#pragma once

#include "kernel-abi/cachefiles.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace rafsd {

struct CachefilesMessage {
    uint32_t msg_id = 0;
    cachefiles::Opcode opcode = cachefiles::kOpen;
    uint32_t object_id = 0;
    // OPEN
    std::string volume_key;  // without its NUL, e.g. "erofs,<fsid or domain_id>"
    std::string cookie_key;  // exactly cookie_key_size bytes
    int fd = -1;             // the anonymous fd the kernel installed in our fd table
    // READ
    uint64_t offset = 0;
    uint64_t length = 0;
};

// Parses `bytes`, the result of one read(). Throws Error on a short, oversized or malformed
// message and on an unknown opcode. For a malformed OPEN, the fd it carried (if the header got
// that far) is left to the caller: see openFdOf().
CachefilesMessage parseMessage(std::span<const std::byte> bytes);

// The anonymous fd of an OPEN message, or -1 when `bytes` is not an OPEN long enough to carry
// one; lets the caller close it even when parseMessage() rejected the rest.
int openFdOf(std::span<const std::byte> bytes);

}  // namespace rafsd
