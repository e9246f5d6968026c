// Cuts files into chunks and stores them in one layer's blob. Reading stays on the caller's
// thread; digests and compression run on worker threads; chunks are committed (deduplicated and
// appended) strictly in file order, so the output does not depend on thread timing.
#pragma once

#include "builder/writer/BlobWriter.h"
#include "builder/writer/BuildOptions.h"
#include "builder/writer/ChunkDictionary.h"
#include "builder/writer/ChunkSink.h"

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace rafs::build {

class ChunkPipeline : public ChunkSink {
public:
    ChunkPipeline(BlobWriter& blob, ChunkDictionary& dictionary, const BuildOptions& options);
    ~ChunkPipeline() override;
    ChunkPipeline(const ChunkPipeline&) = delete;
    ChunkPipeline& operator=(const ChunkPipeline&) = delete;

    // 4 TiB in 1 MiB chunks: a sparse lastlog of 2^32 uids is about 1.2 TiB.
    static constexpr uint64_t kMaxFileChunks = uint64_t{1} << 22;

    void addFile(Inode& inode, FileData& data) override;
    // Waits for every chunk handed in so far and commits it.
    void finish();

private:
    struct Encoded {
        Digest digest{};
        std::vector<uint8_t> stored;  // as the blob stores it: compressed, or the zeros themselves
        bool compressed = false;
    };
    struct Job {
        Inode* inode = nullptr;
        size_t chunk = 0;
        uint32_t size = 0;  // uncompressed
        std::vector<uint8_t> data;
        Digest digest{};
        std::vector<uint8_t> packed;
        bool compressed = false;
        const Encoded* zero = nullptr;  // the zero chunk of its size (zeroChunk), shared, not copied
        bool done = false;
        std::exception_ptr error;
    };

    void submit(std::unique_ptr<Job> job);
    void encode(Job& job) const;
    void commitFront();
    void workerLoop();
    const Encoded& zeroChunk(uint32_t size);
    // The job is the zero chunk of its size: encoded once, done at once.
    void useZeroChunk(Job& job);

    BlobWriter& blob_;
    ChunkDictionary& dictionary_;
    const BuildOptions& options_;
    size_t window_;

    std::mutex mutex_;
    std::condition_variable work_ready_;
    std::condition_variable job_done_;
    std::deque<Job*> queue_;                     // waiting for a worker
    std::deque<std::unique_ptr<Job>> in_order_;  // every job not committed yet, in file order
    std::vector<std::vector<uint8_t>> spare_buffers_;
    bool stopping_ = false;
    std::vector<std::thread> workers_;
    std::map<uint32_t, Encoded> zero_chunks_;  // all-zero chunks are common (sparse files)
};

}  // namespace rafs::build
