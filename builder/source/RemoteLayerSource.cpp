#include "builder/source/RemoteLayerSource.h"

#include "format/Digest.h"
#include "format/Error.h"

#include <algorithm>
#include <cstring>

namespace rafs::build {

namespace {
// Requests of 4 MiB keep a 100 Mbit/s to 10 Gbit/s link busy with few round trips; 32 MiB ahead
// per layer bounds memory while the builder is busy with an earlier layer.
constexpr uint64_t kPiece = 4 << 20;
constexpr size_t kAhead = 32 << 20;
}  // namespace

bool DownloadSlots::acquire(size_t layer) {
    std::unique_lock lock(mutex_);
    auto abandoned = [&] { return layer < abandoned_.size() && abandoned_[layer]; };
    changed_.wait(lock, [&] { return abandoned() || layer < first_unfinished_ + parallel_; });
    return !abandoned();
}

void DownloadSlots::release(size_t layer) {
    std::lock_guard lock(mutex_);
    if (done_.size() <= layer) done_.resize(layer + 1, false);
    done_[layer] = true;
    while (first_unfinished_ < done_.size() && done_[first_unfinished_]) ++first_unfinished_;
    changed_.notify_all();
}

void DownloadSlots::abandon(size_t layer) {
    std::lock_guard lock(mutex_);
    if (abandoned_.size() <= layer) abandoned_.resize(layer + 1, false);
    abandoned_[layer] = true;
    changed_.notify_all();
}

RemoteLayerSource::RemoteLayerSource(registry::ImageStore& store, registry::Descriptor layer, size_t index,
                                     DownloadSlots& slots, std::string name, std::function<void(uint64_t)> on_bytes)
    : store_(store), layer_(std::move(layer)), index_(index), slots_(slots), name_(std::move(name)),
      on_bytes_(std::move(on_bytes)), thread_([this] { download(); }) {}

RemoteLayerSource::~RemoteLayerSource() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
    slots_.abandon(index_);
    thread_.join();
}

void RemoteLayerSource::download() {
    const bool started = slots_.acquire(index_);
    try {
        if (!started) fail("{}: cancelled", name_);
        Hasher hasher(Digester::Sha256);
        for (uint64_t offset = 0; offset < layer_.size;) {
            {
                std::unique_lock lock(mutex_);
                changed_.wait(lock, [&] { return stopping_ || buffered_ < kAhead; });
                if (stopping_) break;
            }
            std::vector<uint8_t> piece(std::min(kPiece, layer_.size - offset));
            store_.readBlob(layer_.digest, offset, piece);
            hasher.update(piece);
            offset += piece.size();
            if (on_bytes_) on_bytes_(piece.size());
            std::lock_guard lock(mutex_);
            downloaded_ = offset;
            buffered_ += piece.size();
            pieces_.push_back(std::move(piece));
            changed_.notify_all();
        }
        const bool complete = downloaded_ == layer_.size;
        if (complete) {
            // The descriptor's size was read in whole; a longer blob would be a different blob,
            // and its digest below cannot match.
            const std::string digest = "sha256:" + toHex(hasher.finish());
            if (digest != layer_.digest) fail("{}: its content has digest {}, not {}", name_, digest, layer_.digest);
        }
        std::lock_guard lock(mutex_);
        finished_ = complete;
    } catch (...) {  // for read() to rethrow: also what on_bytes_ throws
        std::lock_guard lock(mutex_);
        error_ = std::current_exception();
    }
    if (started) slots_.release(index_);
    changed_.notify_all();
}

size_t RemoteLayerSource::read(std::span<uint8_t> out) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !pieces_.empty() || finished_ || error_; });
    if (pieces_.empty()) {
        if (error_) std::rethrow_exception(error_);
        return 0;
    }
    std::vector<uint8_t>& front = pieces_.front();
    const size_t n = std::min(out.size(), front.size() - front_pos_);
    std::memcpy(out.data(), front.data() + front_pos_, n);
    front_pos_ += n;
    buffered_ -= n;
    if (front_pos_ == front.size()) {
        pieces_.pop_front();
        front_pos_ = 0;
    }
    changed_.notify_all();
    return n;
}

}  // namespace rafs::build
