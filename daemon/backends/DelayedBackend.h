// A test aid behind `rafsd mount --test-fetch-delay`: holds every backend read for a while, so a
// test can kill the daemon while the kernel waits for a miss.
#pragma once

#include "daemon/backends/Backend.h"

#include <chrono>
#include <memory>
#include <thread>

namespace rafsd {

class DelayedBackend final : public Backend {
public:
    DelayedBackend(std::shared_ptr<Backend> inner, std::chrono::milliseconds delay)
        : inner_(std::move(inner)), delay_(delay) {}
    void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override {
        std::this_thread::sleep_for(delay_);
        inner_->read(blob_id, offset, out);
    }
    void readArriving(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out,
                      const Arrived& arrived) override {
        std::this_thread::sleep_for(delay_);
        inner_->readArriving(blob_id, offset, out, arrived);
    }
    void readElsewhere(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override {
        std::this_thread::sleep_for(delay_);
        inner_->readElsewhere(blob_id, offset, out);
    }
    uint64_t size(const std::string& blob_id) override { return inner_->size(blob_id); }
    uint64_t probeSize(const std::string& blob_id) override { return inner_->probeSize(blob_id); }
    std::string describe() const override { return inner_->describe() + " (delayed)"; }

private:
    std::shared_ptr<Backend> inner_;
    std::chrono::milliseconds delay_;
};

}  // namespace rafsd
