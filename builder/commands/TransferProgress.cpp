#include "builder/commands/TransferProgress.h"

#include <fmt/format.h>

#include <ostream>

namespace rafs::build {

namespace {
std::string mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }
}  // namespace

TransferProgress::TransferProgress(std::ostream& out, bool terminal, size_t layers, uint64_t total_bytes)
    : out_(out), terminal_(terminal), layers_(layers), total_bytes_(total_bytes) {}

double TransferProgress::seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void TransferProgress::drawLocked() {
    const double s = std::max(seconds(), 1e-3);
    out_ << fmt::format("\r\033[Klayers {}/{} · {} of {} · {}/s", layers_done_, layers_, mib(bytes_), mib(total_bytes_),
                        mib(static_cast<uint64_t>(static_cast<double>(bytes_) / s)))
         << std::flush;
    drawn_ = std::chrono::steady_clock::now();
}

void TransferProgress::add(uint64_t bytes) {
    std::lock_guard lock(mutex_);
    bytes_ += bytes;
    if (terminal_ && std::chrono::steady_clock::now() - drawn_ > std::chrono::milliseconds(250)) drawLocked();
}

void TransferProgress::line(const std::string& text) {
    std::lock_guard lock(mutex_);
    if (terminal_) out_ << "\r\033[K";
    out_ << text << "\n";
    if (terminal_) drawLocked();
    else out_ << std::flush;
}

void TransferProgress::layerDone() {
    std::lock_guard lock(mutex_);
    ++layers_done_;
    if (terminal_) drawLocked();
}

void TransferProgress::finish() {
    std::lock_guard lock(mutex_);
    if (terminal_) out_ << "\r\033[K" << std::flush;
}

}  // namespace rafs::build
