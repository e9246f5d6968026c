// Where blobs come from. Backends only read bytes; they never touch cache files.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace rafsd {

class Backend {
public:
    virtual ~Backend() = default;
    // Reads exactly out.size() bytes of blob `blob_id` at `offset`. Throws rafs::Error naming
    // the blob and the range when the blob is missing, short, or the transfer fails.
    // Called concurrently from several fetch threads.
    virtual void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) = 0;
    // The blob's size in bytes; throws rafs::Error if it is missing.
    virtual uint64_t size(const std::string& blob_id) = 0;
    // For logs and status: "localfs:/var/lib/rafsd/blobs".
    virtual std::string describe() const = 0;
};

}  // namespace rafsd
