// Reading on-disk structs out of untrusted byte buffers: overflow-safe range checks and unaligned
// loads. Callers check ranges first so their errors can name the file and object; loadAt's own
// check is the last line of defence.
#pragma once

#include "format/Error.h"

#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

namespace rafs {

// True if [offset, offset + size) lies within `total` bytes, without overflowing.
constexpr bool inBounds(uint64_t offset, uint64_t size, uint64_t total) {
    return offset <= total && size <= total - offset;
}

template <typename T>
T loadAt(std::span<const uint8_t> bytes, uint64_t offset) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (!inBounds(offset, sizeof(T), bytes.size())) {
        fail("read of {} bytes at offset {} past the end of a {}-byte buffer", sizeof(T), offset,
             bytes.size());
    }
    T value;
    std::memcpy(&value, bytes.data() + offset, sizeof(T));
    return value;
}

constexpr uint64_t alignUp(uint64_t value, uint64_t alignment) {
    return (value + alignment - 1) / alignment * alignment;
}

}  // namespace rafs
