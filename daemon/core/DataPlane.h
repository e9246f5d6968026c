// What the kernel engines need from the core: make a byte range of a blob present in that blob's
// cache file, then report; and, for a cache file the kernel owns, forget data it lost. Everything
// else (planning, fetching, verifying, caching, prefetching) stays behind this interface.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

namespace rafsd {

// 0 when the range is present in the cache file, else a positive errno (EIO when the data could
// not be fetched or failed verification).
using Completion = std::function<void(int error)>;

// `done`, run the first time the result is called and never again: for a caller that completes a
// request itself when the callee throws, not knowing whether the callee had completed it already.
inline Completion once(Completion done) {
    return [done = std::move(done), called = std::make_shared<std::atomic_flag>()](int error) {
        if (!called->test_and_set()) done(error);
    };
}

class DataPlane {
public:
    virtual ~DataPlane() = default;

    // Makes [offset, offset + length) of blob `blob` of image `image` present in its cache file,
    // then calls done exactly once: possibly inline (range already present), possibly from
    // another thread. Ranges past the blob's end are clamped. Thread-safe.
    virtual void makePresent(uint32_t image, uint32_t blob, uint64_t offset, uint64_t length,
                             Completion done) = 0;

    // The chunks of [offset, offset + length) marked present whose data the cache file no longer
    // holds (the kernel recreated its cache file, or a crash lost data never written back) are
    // marked missing, so makePresent fetches them again. Returns how many. Thread-safe, also
    // while fetches write the same blob.
    virtual uint32_t forgetLost(uint32_t image, uint32_t blob, uint64_t offset, uint64_t length) = 0;

    // Makes the whole of blob `blob` of image `image` present, as makePresent does, then calls done
    // exactly once. Not a read: no reader waits on it, so it is neither traced nor counted as a
    // miss. For a stop that must leave no hole in a cache file the kernel still reads without us.
    virtual void fill(uint32_t image, uint32_t blob, Completion done) = 0;
};

}  // namespace rafsd
