#include "daemon/core/FetchPlanner.h"
#include "format/ByteView.h"

#include <algorithm>

namespace rafsd {

namespace {
constexpr uint64_t kPage = 4096;
uint64_t alignUp(uint64_t v) { return rafs::alignUp(v, kPage); }
}  // namespace

uint64_t FetchPlanner::extentEnd(const rafs::BlobChunk& c) { return alignUp(c.uncompressed_offset + c.uncompressed_size); }

FetchPlanner::FetchPlanner(uint64_t amplify, uint64_t max_run)
    : amplify_(amplify), max_run_(std::max<uint64_t>(max_run, 1)) {}

uint32_t FetchPlanner::firstCovering(std::span<const rafs::BlobChunk> chunks, uint64_t offset) {
    auto it = std::partition_point(chunks.begin(), chunks.end(),
                                   [&](const rafs::BlobChunk& c) { return extentEnd(c) <= offset; });
    return static_cast<uint32_t>(it - chunks.begin());
}

FetchPlan FetchPlanner::plan(std::span<const rafs::BlobChunk> chunks, uint64_t offset,
                             uint64_t length, const std::function<ChunkState(uint32_t)>& state) const {
    FetchPlan plan;
    const uint64_t start = offset / kPage * kPage;
    const uint64_t end = alignUp(offset + length);
    std::vector<uint32_t> to_fetch;

    uint32_t i = firstCovering(chunks, start);
    for (; i < chunks.size() && chunks[i].uncompressed_offset < end; ++i) {
        ChunkState s = state(i);
        if (s == ChunkState::Present) continue;
        plan.required.push_back(i);
        if (s == ChunkState::Missing) to_fetch.push_back(i);
    }
    // Amplify only when this miss fetches something: following missing chunks, until the
    // window is filled or a chunk is present or already on its way. The chunks read count whole:
    // a read of 4 KiB in a 1 MiB chunk fetches that chunk, a window already, and its reader waits
    // for those bytes alone (on a 100 Mbit/s link half the time of chunk and window).
    if (!to_fetch.empty()) {
        uint64_t covered = extentEnd(chunks[i - 1]) - chunks[to_fetch.front()].uncompressed_offset;
        for (; i < chunks.size() && covered < amplify_; ++i) {
            if (state(i) != ChunkState::Missing) break;
            to_fetch.push_back(i);
            covered += extentEnd(chunks[i]) - chunks[i].uncompressed_offset;
        }
    }

    for (uint32_t ci : to_fetch) appendToRuns(plan.runs, chunks, ci);
    return plan;
}

std::vector<FetchRun> FetchPlanner::ahead(std::span<const rafs::BlobChunk> chunks, uint64_t offset,
                                          const std::function<ChunkState(uint32_t)>& state) const {
    std::vector<FetchRun> runs;
    if (amplify_ == 0 || offset < kPage) return runs;  // amplification off, or nothing read before
    const uint32_t before = firstCovering(chunks, offset - 1);
    if (before == chunks.size() || chunks[before].uncompressed_offset > offset - 1 ||
        state(before) == ChunkState::Missing) {
        return runs;  // not reading on from earlier data
    }
    const uint32_t trigger = firstCovering(chunks, offset + amplify_);
    if (trigger == chunks.size() || state(trigger) != ChunkState::Missing) return runs;
    for (uint32_t i = firstCovering(chunks, offset);
         i < chunks.size() && chunks[i].uncompressed_offset < offset + 2 * amplify_; ++i) {
        if (state(i) == ChunkState::Missing) appendToRuns(runs, chunks, i);
    }
    return runs;
}

void FetchPlanner::appendToRuns(std::vector<FetchRun>& runs, std::span<const rafs::BlobChunk> chunks,
                                uint32_t ci) const {
    const rafs::BlobChunk& c = chunks[ci];
    if (!runs.empty()) {
        FetchRun& r = runs.back();
        const bool adjacent = r.first + r.count == ci && r.offset + r.length == c.compressed_offset;
        if (adjacent && r.length + c.compressed_size <= max_run_) {
            ++r.count;
            r.length += c.compressed_size;
            return;
        }
    }
    runs.push_back({ci, 1, c.compressed_offset, c.compressed_size});
}

}  // namespace rafsd
