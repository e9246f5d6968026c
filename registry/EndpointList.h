// An ordered list of alternatives tried in turn, a failing one skipped for a while: a registry
// host's mirrors before the host itself, or a proxy before the direct route.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

namespace registry {

class EndpointList {
public:
    EndpointList(std::vector<std::string> endpoints, std::chrono::milliseconds skip_for);

    // Indices to try now, in order: those not skipped, then the skipped ones (a skipped endpoint
    // is still better than none).
    std::vector<size_t> order() const;
    void failed(size_t index);
    void succeeded(size_t index);

    const std::string& at(size_t index) const { return endpoints_[index]; }
    size_t size() const { return endpoints_.size(); }

private:
    std::vector<std::string> endpoints_;
    std::chrono::milliseconds skip_for_;
    mutable std::mutex mutex_;
    std::vector<std::chrono::steady_clock::time_point> skipped_until_;
};

}  // namespace registry
