// Runs fn(0) .. fn(count - 1) on up to `limit` threads and waits for all of them. For work that
// is mostly waiting on the network, such as a mount's per-blob requests: N blobs cost one round
// trip instead of N. The first failure (lowest index) is rethrown once every call has ended.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace rafsd {

template <typename Fn>
void runConcurrently(size_t count, unsigned limit, Fn&& fn) {
    std::vector<std::exception_ptr> errors(count);
    std::atomic<size_t> next{0};
    auto work = [&] {
        for (size_t i = next++; i < count; i = next++) {
            try {
                fn(i);
            } catch (...) {
                errors[i] = std::current_exception();
            }
        }
    };
    const size_t threads = std::min<size_t>(count, std::max(1u, limit));
    {
        std::vector<std::jthread> pool;
        for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
        work();
    }
    for (const std::exception_ptr& e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

}  // namespace rafsd
