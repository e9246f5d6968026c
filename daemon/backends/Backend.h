// Where blobs come from. Backends only read bytes; they never touch cache files.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace rafsd {

class Backend {
public:
    // Told how many bytes at the start of a read's buffer are in (see readArriving); returns the
    // count worth the next call (SIZE_MAX: none). The network backends hand it to their range
    // reads as registry::RangeSink::Arrived, the same type.
    using Arrived = std::function<size_t(size_t filled)>;

    virtual ~Backend() = default;
    // Reads exactly out.size() bytes of blob `blob_id` at `offset`. Throws rafs::Error naming
    // the blob and the range when the blob is missing, short, or the transfer fails.
    // Called concurrently from several fetch threads.
    virtual void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) = 0;
    // As read(), calling `arrived` on the calling thread while the bytes come in, so that the
    // caller can use the start of a large range before its end is there (ChunkFetcher decodes a
    // run's chunks as they land). The count grows, or starts again from 0 when a transfer is
    // retried (the same bytes come again); the last bytes may come with no call after them. A
    // backend calls again once the count reaches what the last call returned (it may call sooner).
    // `arrived` must not throw. This default, for backends whose reads are not worth watching
    // (local files), reports the whole range once it is read.
    virtual void readArriving(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out,
                              const Arrived& arrived) {
        read(blob_id, offset, out);
        arrived(out.size());
    }
    // As read(), for bytes of the blob read before that failed their digest: a backend with
    // several sources (a registry's mirrors, then the registry) skips for a while the one it
    // would ask first, so that the bytes come from another. This default reads as read() does.
    virtual void readElsewhere(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
        read(blob_id, offset, out);
    }
    // The blob's size in bytes; throws rafs::Error if it is missing. A network backend answers
    // from what the server said before.
    virtual uint64_t size(const std::string& blob_id) = 0;
    // As size(), asked of the server now: the check each mount makes that the blob is there.
    virtual uint64_t probeSize(const std::string& blob_id) { return size(blob_id); }
    // For logs and status: "localfs:/var/lib/rafsd/blobs".
    virtual std::string describe() const = 0;
};

}  // namespace rafsd
