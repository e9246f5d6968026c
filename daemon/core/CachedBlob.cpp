#include "daemon/core/CachedBlob.h"

#include "daemon/core/Log.h"

namespace rafsd {

void CachedBlob::onComplete(std::function<void()> fn) {
    std::lock_guard lock(mutex_);
    on_complete_ = std::move(fn);
    if (completed_) notifyComplete();
}

void CachedBlob::unmarkWhenComplete() {
    std::lock_guard lock(mutex_);
    unmark_when_complete_ = true;
}

bool CachedBlob::chunksMayBeFreed() {
    std::lock_guard lock(mutex_);
    return chunksMayBeFreedLocked();
}

bool CachedBlob::chunksMayBeFreedLocked() const {
    // Complete and unmarked: its readers no longer ask first. Under the lock, which the last
    // chunk's completion (ChunkFetcher::finishChunks) and unmarkWhenComplete take too.
    return cache_->file().canDiscard() && !(unmark_when_complete_ && cache_->complete());
}

void CachedBlob::notifyComplete() {
    if (!on_complete_) return;
    try {
        on_complete_();
    } catch (const std::exception& e) {
        log::warn("blob {}: {}; its reads keep raising events", descriptor_.id, e.what());
    }
}

}  // namespace rafsd
