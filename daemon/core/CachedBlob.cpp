#include "daemon/core/CachedBlob.h"

#include "daemon/core/Log.h"

namespace rafsd {

void CachedBlob::onComplete(std::function<void()> fn) {
    std::lock_guard lock(mutex_);
    on_complete_ = std::move(fn);
    if (completed_) notifyComplete();
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
