// Which chunks of one blob are present in its cache file: one bit per chunk (ci index), kept in
// memory and persisted in a small file next to the cache file (e.g. "<blob-id>.chunkmap").
//
// File layout (native byte order; the file never leaves the host, and a file from a host of the
// other byte order fails the magic check):
//   ChunkMapHeader (128 bytes): magic "RAFSCMAP", format version, chunk count, blob uncompressed
//   size, blob id (64 hex chars), the fingerprint of the chunk table the bits were set under
//   (BlobDescriptor::fingerprint), CRC32 of the header bytes before it;
//   then ceil(chunk count / 8) bytes: bit (i % 8) of byte (i / 8) is chunk i, padding bits zero.
//
// Persistence: set() updates the in-memory bit atomically, then pwrite()s the byte that holds it
// (setRange(): the bytes that hold the range, in one pwrite).
// Chosen over a MAP_SHARED mapping because a write error is then an Error at set() rather than a
// SIGBUS on a page fault (btrfs must allocate on every overwrite; any fs can be full), and the
// cost — one small syscall per chunk — is noise next to writing the chunk itself. The page cache
// keeps the byte across a rafsd crash; flush() makes it durable across a power loss.
#pragma once

#include "format/Digest.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace rafsd {

class ReadinessBitmap {
public:
    static constexpr uint32_t kFormatVersion = 2;
    // How long open() waits for another holder of the file's lock to let go.
    static constexpr std::chrono::milliseconds kLockWait{1000};

    // Opens the bitmap of blob `blob_id` (64 hex chars) with `chunk_count` chunks and
    // `blob_size` uncompressed bytes, whose chunks the table of `fingerprint` describes (a blob id
    // is only a name: another image may describe the same blob with other chunks, or digests that
    // vouched for other bytes). A file of another format version, of another blob, geometry or
    // fingerprint, of the wrong length or with a bad checksum is replaced by an empty one, and
    // discarded() tells why (for the caller to log); it is never read. The file stays locked
    // (flock) while the bitmap is open: opening it again, from this process or another, throws
    // Error after waiting kLockWait for the holder to let go; so do a bad blob id and a failed
    // system call.
    static ReadinessBitmap open(const std::filesystem::path& path, std::string_view blob_id,
                                uint32_t chunk_count, uint64_t blob_size, const rafs::Digest& fingerprint = {});

    ~ReadinessBitmap();
    ReadinessBitmap(ReadinessBitmap&&) noexcept;
    ReadinessBitmap& operator=(ReadinessBitmap&&) noexcept;

    const std::filesystem::path& path() const { return path_; }
    uint32_t chunkCount() const { return chunk_count_; }

    // True if an existing file was replaced; discardReason() then says why.
    bool discarded() const { return !discard_reason_.empty(); }
    const std::string& discardReason() const { return discard_reason_; }

    // test, set, count and complete are thread-safe. A chunk index out of range throws Error.
    bool test(uint32_t chunk) const;
    void set(uint32_t chunk) { setRange(chunk, 1); }
    // Sets chunks [first, first + count).
    void setRange(uint32_t first, uint32_t count);
    // Clears chunks [first, first + count) and persists them; returns how many were set.
    uint32_t clearRange(uint32_t first, uint32_t count);
    uint32_t count() const;
    bool complete() const { return count() == chunk_count_; }

    // Clears every set bit whose chunk `drop` returns true for, persists the result and returns
    // how many bits were cleared. Meant for open time, to forget chunks whose data the cache
    // file lost (crash before the data reached disk, cache file recreated).
    uint32_t clearIf(const std::function<bool(uint32_t chunk)>& drop);

    // Makes all bits set so far durable (fdatasync).
    void flush();

private:
    struct State;
    ReadinessBitmap(std::filesystem::path path, uint32_t chunk_count, std::unique_ptr<State> state,
                    std::string discard_reason);
    void checkIndex(uint32_t chunk) const;
    void checkRange(uint32_t first, uint32_t count) const;
    // Writes the bytes holding chunks [first, first + count) to the file.
    void persist(uint32_t first, uint32_t count);

    std::filesystem::path path_;
    uint32_t chunk_count_ = 0;
    std::unique_ptr<State> state_;
    std::string discard_reason_;
};

}  // namespace rafsd
