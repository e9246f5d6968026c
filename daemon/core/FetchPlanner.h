// Turns a kernel miss into backend requests: the chunks that overlap the 4 KiB-aligned range,
// plus following chunks up to the read-amplification window, merged into runs whose compressed
// bytes are adjacent so each run is one backend range. Pure logic: the caller decides, under its
// own lock, which chunks are present or already being fetched.
#pragma once

#include "format/ChunkInfoCodec.h"

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace rafsd {

enum class ChunkState { Missing, InFlight, Present };

struct FetchRun {
    uint32_t first = 0;   // ci index of the run's first chunk
    uint32_t count = 0;   // chunks in the run
    uint64_t offset = 0;  // backend range
    uint64_t length = 0;
};

struct FetchPlan {
    std::vector<uint32_t> required;  // overlap the request and are not present: wait for these
    std::vector<FetchRun> runs;      // chunks to fetch now (required Missing ones + amplification)
};

class FetchPlanner {
public:
    // amplify: bytes of uncompressed data a miss fetches at least, counting the chunks it reads
    // whole (when missing chunks follow);
    // max_run: the largest backend range one run may cover.
    FetchPlanner(uint64_t amplify, uint64_t max_run);

    FetchPlan plan(std::span<const rafs::BlobChunk> chunks, uint64_t offset, uint64_t length,
                   const std::function<ChunkState(uint32_t)>& state) const;

    // Sequential read-ahead for a request at `offset` (4 KiB-aligned). A reader reads on when
    // the block before `offset` is present or on its way. Once such a reader is within one
    // window of the first missing chunk, i.e. the chunk at offset + amplify is missing, returns
    // the missing chunks of [offset, offset + 2 * amplify) as runs; else nothing. A sequential
    // reader thus finds the next window fetched, or being fetched, before it gets there, and
    // fetches go out a window at a time. A random reader's misses only get the amplification
    // of plan().
    std::vector<FetchRun> ahead(std::span<const rafs::BlobChunk> chunks, uint64_t offset,
                                const std::function<ChunkState(uint32_t)>& state) const;

    // Offset just past a chunk's extent: its end rounded up to 4 KiB.
    static uint64_t extentEnd(const rafs::BlobChunk& c);

    // Index of the first chunk whose 4 KiB-rounded extent ends after `offset` (chunks.size() if none).
    static uint32_t firstCovering(std::span<const rafs::BlobChunk> chunks, uint64_t offset);

    // Adds chunk `ci` to `runs`: to the last run if its compressed bytes follow that run's and
    // the run stays within max_run, else as a new run.
    void appendToRuns(std::vector<FetchRun>& runs, std::span<const rafs::BlobChunk> chunks, uint32_t ci) const;

private:

    uint64_t amplify_;
    uint64_t max_run_;
};

}  // namespace rafsd
