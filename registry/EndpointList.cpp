#include "registry/EndpointList.h"

namespace registry {

EndpointList::EndpointList(std::vector<std::string> endpoints, std::chrono::milliseconds skip_for)
    : endpoints_(std::move(endpoints)), skip_for_(skip_for), skipped_until_(endpoints_.size()) {}

std::vector<size_t> EndpointList::order() const {
    const auto now = std::chrono::steady_clock::now();
    std::vector<size_t> usable, skipped;
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < endpoints_.size(); ++i) (skipped_until_[i] > now ? skipped : usable).push_back(i);
    usable.insert(usable.end(), skipped.begin(), skipped.end());
    return usable;
}

void EndpointList::failed(size_t index) {
    std::lock_guard lock(mutex_);
    skipped_until_[index] = std::chrono::steady_clock::now() + skip_for_;
}

void EndpointList::succeeded(size_t index) {
    std::lock_guard lock(mutex_);
    skipped_until_[index] = {};
}

}  // namespace registry
