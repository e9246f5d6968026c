#include "daemon/core/BlobCache.h"
#include "format/ByteView.h"

#include "daemon/core/ScratchBuffer.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace rafsd {

namespace {

constexpr uint64_t kBlock = CacheFile::kBlockSize;

uint64_t extentEnd(const ChunkExtent& c) { return rafs::alignUp(c.offset + c.size, kBlock); }

}  // namespace

BlobCache::BlobCache(std::unique_ptr<CacheFile> file, ReadinessBitmap bitmap,
                     std::vector<ChunkExtent> chunks)
    : file_(std::move(file)), bitmap_(std::move(bitmap)), chunks_(std::move(chunks)) {
    if (chunks_.size() != bitmap_.chunkCount())
        rafs::fail("{}: {} chunks, but its bitmap {} has {}", file_->name(), chunks_.size(),
                   bitmap_.path().string(), bitmap_.chunkCount());
    const uint64_t file_end = rafs::alignUp(file_->size(), kBlock);
    uint64_t previous_end = 0;
    for (size_t i = 0; i < chunks_.size(); ++i) {
        const ChunkExtent& c = chunks_[i];
        if (c.size == 0) rafs::fail("{}: chunk {} is empty", file_->name(), i);
        if (c.offset % kBlock != 0)
            rafs::fail("{}: chunk {} starts at {}, not on a 4 KiB boundary", file_->name(), i, c.offset);
        if (c.offset < previous_end)
            rafs::fail("{}: chunk {} at {} overlaps the previous chunk or is out of order",
                       file_->name(), i, c.offset);
        if (c.offset > file_end || extentEnd(c) > file_end)
            rafs::fail("{}: chunk {} at {} (+{}) ends past the cache file's end {}", file_->name(), i,
                       c.offset, c.size, file_end);
        previous_end = extentEnd(c);
    }
    dropped_at_open_ = validate();
}

ChunkRange BlobCache::chunksCovering(uint64_t offset, uint64_t length) const {
    // Both partitions are monotonic because extents are sorted and do not overlap.
    const auto first = std::partition_point(chunks_.begin(), chunks_.end(),
                                            [&](const ChunkExtent& c) { return extentEnd(c) <= offset; });
    const auto begin = static_cast<uint32_t>(first - chunks_.begin());
    if (length == 0) return {begin, begin};
    const uint64_t end = length > std::numeric_limits<uint64_t>::max() - offset
                             ? std::numeric_limits<uint64_t>::max()
                             : offset + length;
    const auto last = std::partition_point(first, chunks_.end(),
                                           [&](const ChunkExtent& c) { return c.offset < end; });
    return {begin, static_cast<uint32_t>(last - chunks_.begin())};
}

void BlobCache::checkIndex(uint32_t chunk) const {
    if (chunk >= chunks_.size())
        rafs::fail("{}: chunk {} out of range ({} chunks)", file_->name(), chunk, chunks_.size());
}

const ChunkExtent& BlobCache::chunk(uint32_t index) const {
    checkIndex(index);
    return chunks_[index];
}

void BlobCache::write(uint32_t chunk, std::span<const uint8_t> data) {
    checkIndex(chunk);
    const ChunkExtent& c = chunks_[chunk];
    if (data.size() != c.size)
        rafs::fail("{}: chunk {} has {} bytes, expected {}", file_->name(), chunk, data.size(), c.size);

    const size_t padded = extentEnd(c) - c.offset;
    if (reinterpret_cast<uintptr_t>(data.data()) % kBlock == 0 && data.size() == padded) {
        file_->write(c.offset, data);
    } else {
        ScratchBuffer buffer;  // block-aligned, as CacheFile::write needs
        const std::span<uint8_t> block = buffer.get(padded);
        const auto tail = std::copy(data.begin(), data.end(), block.begin());
        std::fill(tail, block.end(), uint8_t{0});
        file_->write(c.offset, block);
    }
    // Only now: the bit must never claim data that is not in the file yet (see the header).
    bitmap_.set(chunk);
}

void BlobCache::writeExtents(uint32_t first, uint32_t count, std::span<const uint8_t> extents) {
    if (count == 0) return;
    checkIndex(first);
    if (uint64_t{first} + count > chunks_.size())
        rafs::fail("{}: chunks {} to {} out of range ({} chunks)", file_->name(), first, uint64_t{first} + count - 1,
                   chunks_.size());
    for (uint32_t i = first + 1; i < first + count; ++i) {
        if (chunks_[i].offset != extentEnd(chunks_[i - 1]))
            rafs::fail("{}: chunks {} and {} are not back to back", file_->name(), i - 1, i);
    }
    const uint64_t offset = chunks_[first].offset;
    const uint64_t length = extentEnd(chunks_[first + count - 1]) - offset;
    if (extents.size() != length)
        rafs::fail("{}: chunks {} to {} span {} bytes, got {}", file_->name(), first, first + count - 1, length,
                   extents.size());
    file_->write(offset, extents);
    // Only now, as in write().
    bitmap_.setRange(first, count);
}

uint64_t BlobCache::discard(uint32_t first, uint32_t count) {
    if (count == 0) return 0;
    checkIndex(first);
    checkIndex(first + count - 1);
    bitmap_.clearRange(first, count);
    const uint64_t offset = chunks_[first].offset;
    file_->discard(offset, extentEnd(chunks_[first + count - 1]) - offset);
    uint64_t bytes = 0;
    for (uint32_t i = first; i < first + count; ++i) bytes += extentEnd(chunks_[i]) - chunks_[i].offset;
    return bytes;
}

uint32_t BlobCache::validate(ChunkRange range) {
    return bitmap_.clearIf([this, range](uint32_t chunk) {
        if (chunk < range.begin || chunk >= range.end) return false;
        const ChunkExtent& c = chunks_[chunk];
        return !file_->hasData(c.offset, extentEnd(c) - c.offset);
    });
}

void BlobCache::flush() {
    file_->sync();
    bitmap_.flush();
}

}  // namespace rafsd
