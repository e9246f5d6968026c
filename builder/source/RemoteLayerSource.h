// A layer blob of an image being converted, streamed from its ImageStore (registry or OCI layout)
// by range reads into a bounded read-ahead buffer, never to disk. Its sha256 and size are checked
// against the layer's descriptor at the end, so a damaged or substituted layer fails the
// conversion. Several layers download at once (DownloadSlots) while the builder applies them to
// the tree one after another.
#pragma once

#include "builder/source/ByteSource.h"
#include "registry/ImageStore.h"
#include "registry/OciImage.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rafs::build {

// Layer i may download once fewer than `parallel` layers before it are unfinished, so the layer
// being applied always has a slot and a later one never blocks an earlier one.
class DownloadSlots {
public:
    explicit DownloadSlots(size_t parallel) : parallel_(parallel) {}
    // False if the layer was abandoned while waiting.
    bool acquire(size_t layer);
    void release(size_t layer);
    // Its source is going away: a wait in acquire() ends.
    void abandon(size_t layer);

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    size_t parallel_;
    std::vector<bool> done_;
    std::vector<bool> abandoned_;
    size_t first_unfinished_ = 0;
};

class RemoteLayerSource : public ByteSource {
public:
    // `on_bytes` is called on the download thread with each piece's size (progress); what it
    // throws ends the download, and read() rethrows it.
    RemoteLayerSource(registry::ImageStore& store, registry::Descriptor layer, size_t index, DownloadSlots& slots,
                      std::string name, std::function<void(uint64_t)> on_bytes);
    ~RemoteLayerSource() override;
    RemoteLayerSource(const RemoteLayerSource&) = delete;
    RemoteLayerSource& operator=(const RemoteLayerSource&) = delete;

    size_t read(std::span<uint8_t> out) override;
    const std::string& name() const override { return name_; }

private:
    void download();

    registry::ImageStore& store_;
    registry::Descriptor layer_;
    size_t index_;
    DownloadSlots& slots_;
    std::string name_;
    std::function<void(uint64_t)> on_bytes_;

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<std::vector<uint8_t>> pieces_;  // downloaded, not read yet
    size_t buffered_ = 0;
    size_t front_pos_ = 0;
    uint64_t downloaded_ = 0;
    bool finished_ = false;  // every byte downloaded and checked
    bool stopping_ = false;
    std::exception_ptr error_;
    std::thread thread_;  // last: starts when the rest is ready
};

}  // namespace rafs::build
