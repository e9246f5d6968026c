#include "registry/TokenCache.h"

#include <algorithm>

namespace registry {

std::chrono::milliseconds TokenCache::renewalMargin(std::chrono::seconds lifetime) {
    return std::min<std::chrono::milliseconds>(std::chrono::seconds(30), std::chrono::milliseconds(lifetime) / 5);
}

std::string TokenCache::get(const std::string& key, const Fetch& fetch, const std::string& refused) {
    std::unique_lock lock(mutex_);
    Entry& e = entries_[key];
    for (;;) {
        const bool usable = !e.token.empty() && Clock::now() < e.renew_at && (refused.empty() || e.token != refused);
        if (usable) return e.token;
        if (!e.fetching) break;
        // Someone is fetching: its result is ours.
        const uint64_t generation = e.generation;
        done_.wait(lock, [&] { return e.generation != generation; });
        if (e.error) std::rethrow_exception(e.error);
        if (!e.token.empty() && e.token != refused) return e.token;
    }
    e.fetching = true;
    lock.unlock();
    BearerToken token;
    std::exception_ptr error;
    const auto started = Clock::now();
    try {
        token = fetch();
    } catch (...) {
        error = std::current_exception();
    }
    lock.lock();
    e.fetching = false;
    e.generation++;
    e.error = error;
    if (!error) {
        e.token = token.value;
        e.renew_at = started + token.lifetime - renewalMargin(token.lifetime);
    }
    done_.notify_all();
    if (error) std::rethrow_exception(error);
    return e.token;
}

}  // namespace registry
