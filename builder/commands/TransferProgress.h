// mkrafs convert's progress: on a terminal one status line redrawn at most 4 times a second
// (layers done, bytes, rate); otherwise only whole lines (one per layer), so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <mutex>
#include <string>

namespace rafs::build {

class TransferProgress {
public:
    TransferProgress(std::ostream& out, bool terminal, size_t layers, uint64_t total_bytes);

    // Bytes that arrived (any thread).
    void add(uint64_t bytes);
    // A whole line (any thread); on a terminal the status line is redrawn below it.
    void line(const std::string& text);
    void layerDone();
    // Clears the status line.
    void finish();

    uint64_t bytes() const { return bytes_; }
    double seconds() const;

private:
    void drawLocked();

    std::ostream& out_;
    bool terminal_;
    size_t layers_;
    uint64_t total_bytes_;
    std::mutex mutex_;
    size_t layers_done_ = 0;
    uint64_t bytes_ = 0;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point drawn_{};
};

}  // namespace rafs::build
