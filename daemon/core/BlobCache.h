// One blob's cache state: its cache file (the blob's uncompressed address space), the readiness
// bitmap saying which chunks of that file hold verified data, and where each chunk lives.
//
// Invariant: a chunk's bit is set only after its data is in the cache file (write() writes, then
// sets). The other order would let a concurrent reader — or a restart after a crash in between —
// find the bit set over a hole, and the kernel would serve zeros as file content.
#pragma once

#include "daemon/core/CacheFile.h"
#include "daemon/core/ReadinessBitmap.h"

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace rafsd {

// A chunk's place in the blob's uncompressed address space. Chunks start on 4 KiB boundaries;
// each one's extent runs to its end rounded up to 4 KiB (the zero padding written with it).
struct ChunkExtent {
    uint64_t offset = 0;  // uncompressed_offset
    uint32_t size = 0;    // uncompressed_size
};

// Chunk indexes [begin, end).
struct ChunkRange {
    uint32_t begin = 0;
    uint32_t end = 0;

    bool empty() const { return begin == end; }
    bool operator==(const ChunkRange&) const = default;
};

class BlobCache {
public:
    // `chunks` is indexed by ci index and sorted by offset, with non-empty, non-overlapping
    // 4 KiB-rounded extents inside the cache file; its size must match the bitmap's chunk count.
    // Throws Error otherwise. Runs validate() once; droppedAtOpen() tells how many bits it cleared.
    BlobCache(std::unique_ptr<CacheFile> file, ReadinessBitmap bitmap,
              std::vector<ChunkExtent> chunks);

    CacheFile& file() { return *file_; }
    const ReadinessBitmap& bitmap() const { return bitmap_; }
    uint32_t chunkCount() const { return static_cast<uint32_t>(chunks_.size()); }
    const ChunkExtent& chunk(uint32_t index) const;

    // The chunks whose 4 KiB-rounded extents overlap [offset, offset + length).
    ChunkRange chunksCovering(uint64_t offset, uint64_t length) const;

    // Thread-safe.
    bool isPresent(uint32_t chunk) const { return bitmap_.test(chunk); }
    bool complete() const { return bitmap_.complete(); }
    // For a chunk whose data is known to be in the cache file already.
    void markPresent(uint32_t chunk) { bitmap_.set(chunk); }

    // Writes a chunk's verified, uncompressed data (exactly its size) zero-padded to 4 KiB at
    // its offset, then marks it present. Thread-safe for distinct chunks.
    void write(uint32_t chunk, std::span<const uint8_t> data);

    // Writes chunks [first, first + count), which must lie back to back (each one's 4 KiB-rounded
    // extent ends where the next begins), from `extents`: their data laid out as in the cache
    // file, zero padding included, in a 4 KiB-aligned buffer. One write, then all are marked
    // present. Thread-safe for distinct chunks.
    void writeExtents(uint32_t first, uint32_t count, std::span<const uint8_t> extents);

    // Frees chunks [first, first + count) from the cache file (CacheFile::discard): their bits are
    // cleared and persisted first, then the range becomes a hole, so neither a crash in between nor
    // a reader can find a bit over a hole. The caller makes sure none of them is being written.
    // Returns the bytes freed (the chunks' 4 KiB-rounded extents).
    uint64_t discard(uint32_t first, uint32_t count);

    // Clears the bits of chunks whose range the cache file reports as (partly) a hole: data lost
    // to a crash before it reached the disk, or a cache file that was recreated. Returns how many
    // bits were cleared. Safe while other chunks are written: only chunks whose bit is set are
    // checked, and a bit is set only after its chunk's data was written.
    uint32_t validate() { return validate({0, chunkCount()}); }
    // The same for the chunks of `range` only.
    uint32_t validate(ChunkRange range);
    uint32_t droppedAtOpen() const { return dropped_at_open_; }

    // Makes everything written so far durable: the data first, then the bits that claim it.
    void flush();

private:
    void checkIndex(uint32_t chunk) const;

    std::unique_ptr<CacheFile> file_;
    ReadinessBitmap bitmap_;
    std::vector<ChunkExtent> chunks_;
    uint32_t dropped_at_open_ = 0;
};

}  // namespace rafsd
