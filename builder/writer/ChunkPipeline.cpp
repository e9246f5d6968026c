#include "builder/writer/ChunkPipeline.h"

#include "format/Codec.h"
#include "format/Error.h"

#include <algorithm>
#include <cstring>

namespace rafs::build {

namespace {

bool isAllZero(std::span<const uint8_t> data) {
    static const uint8_t zeros[4096] = {};
    while (!data.empty()) {
        size_t n = std::min(data.size(), sizeof(zeros));
        if (std::memcmp(data.data(), zeros, n) != 0) return false;
        data = data.subspan(n);
    }
    return true;
}

}  // namespace

ChunkPipeline::ChunkPipeline(BlobWriter& blob, ChunkDictionary& dictionary,
                             const BuildOptions& options)
    : blob_(blob), dictionary_(dictionary), options_(options) {
    unsigned threads = options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    // Chunks in flight, in file order: two per worker at least; with small chunks more, so that
    // one large chunk at the front does not leave the other workers idle behind it (most files
    // of a root file system are a few KiB), up to 32 MiB of chunk data or eight per worker.
    window_ = std::clamp<size_t>((32u << 20) / options.chunk_size, 2 * threads + 2, 8 * threads + 2);
    for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { workerLoop(); });
}

ChunkPipeline::~ChunkPipeline() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    work_ready_.notify_all();
    for (auto& t : workers_) t.join();
}

void ChunkPipeline::encode(Job& job) const {
    job.digest = digestOf(options_.digester, job.data);
    job.compressed = compress(options_.compressor, job.data, job.packed, options_.compression_level);
}

void ChunkPipeline::workerLoop() {
    std::unique_lock lock(mutex_);
    for (;;) {
        work_ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        Job* job = queue_.front();
        queue_.pop_front();
        lock.unlock();
        try {
            encode(*job);
        } catch (...) {
            job->error = std::current_exception();
        }
        lock.lock();
        job->done = true;
        job_done_.notify_all();
    }
}

const ChunkPipeline::Encoded& ChunkPipeline::zeroChunk(uint32_t size) {
    auto it = zero_chunks_.find(size);
    if (it != zero_chunks_.end()) return it->second;
    Job job;
    job.data.assign(size, 0);
    encode(job);
    Encoded e{job.digest, job.compressed ? std::move(job.packed) : std::move(job.data), job.compressed};
    return zero_chunks_.emplace(size, std::move(e)).first->second;
}

void ChunkPipeline::useZeroChunk(Job& job) {
    const Encoded& z = zeroChunk(job.size);
    job.digest = z.digest;
    job.compressed = z.compressed;
    job.zero = &z;
    job.done = true;
}

void ChunkPipeline::addFile(Inode& inode, FileData& data) {
    const uint64_t size = inode.size;
    const uint64_t count = (size + options_.chunk_size - 1) / options_.chunk_size;
    // Every chunk, a hole's too, costs a chunk record here and an index entry in the bootstrap:
    // a sparse file of a few bytes in a tar may claim petabytes.
    if (count > kMaxFileChunks) {
        fail("{}: {} bytes make {} chunks of {} bytes; mkrafs takes up to {} chunks per file (a larger "
             "--chunk-size takes larger files)", data.name(), size, count, options_.chunk_size, kMaxFileChunks);
    }
    inode.chunks.assign(static_cast<size_t>(count), ChunkRef{});
    for (size_t i = 0; i < count; ++i) {
        auto job = std::make_unique<Job>();
        job->inode = &inode;
        job->chunk = i;
        const uint64_t offset = static_cast<uint64_t>(i) * options_.chunk_size;
        job->size = static_cast<uint32_t>(std::min<uint64_t>(options_.chunk_size, size - offset));
        if (data.skipHole(job->size)) {
            useZeroChunk(*job);
            submit(std::move(job));
            continue;
        }
        {
            std::lock_guard lock(mutex_);
            if (!spare_buffers_.empty()) {
                job->data = std::move(spare_buffers_.back());
                spare_buffers_.pop_back();
            }
        }
        job->data.resize(job->size);
        data.read(job->data);
        if (isAllZero(job->data)) useZeroChunk(*job);
        submit(std::move(job));
    }
}

void ChunkPipeline::submit(std::unique_ptr<Job> job) {
    std::unique_lock lock(mutex_);
    while (in_order_.size() >= window_) {
        lock.unlock();
        commitFront();
        lock.lock();
    }
    if (!job->done) {
        queue_.push_back(job.get());
        work_ready_.notify_one();
    }
    in_order_.push_back(std::move(job));
}

void ChunkPipeline::commitFront() {
    std::unique_ptr<Job> job;
    {
        std::unique_lock lock(mutex_);
        job_done_.wait(lock, [this] { return in_order_.front()->done; });
        job = std::move(in_order_.front());
        in_order_.pop_front();
    }
    if (job->error) std::rethrow_exception(job->error);

    const uint32_t usize = job->size;
    std::optional<ChunkRef> ref = dictionary_.find(job->digest, usize);
    if (!ref) {
        const std::span<const uint8_t> stored = job->zero       ? std::span<const uint8_t>(job->zero->stored)
                                                : job->compressed ? std::span<const uint8_t>(job->packed)
                                                                  : std::span<const uint8_t>(job->data);
        ref = blob_.append(stored, job->compressed, usize, job->digest);
        dictionary_.insert(*ref);
    }
    job->inode->chunks[job->chunk] = *ref;

    // A skipped hole's job never had a buffer: only real ones are kept, no more than can be in use.
    std::lock_guard lock(mutex_);
    if (job->data.capacity() != 0 && spare_buffers_.size() < window_) spare_buffers_.push_back(std::move(job->data));
}

void ChunkPipeline::finish() {
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            if (in_order_.empty()) return;
        }
        commitFront();
    }
}

}  // namespace rafs::build
