// A small io_uring wrapper for synchronous, one-request-at-a-time I/O: submit one SQE, wait for
// its completion. Cache-file writes come from a small worker pool, so each worker thread uses
// its own ring (threadLocal()) and no ring is ever shared or locked.
//
// Thread-safety: an IoRing is NOT thread-safe; use one per thread. threadLocal() is safe to call
// from any thread and returns that thread's ring.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

namespace rafsd {

class IoRing {
public:
    // Throws Error if the kernel refuses io_uring (e.g. sysctl kernel.io_uring_disabled).
    explicit IoRing(unsigned entries = 4);
    ~IoRing();
    IoRing(const IoRing&) = delete;
    IoRing& operator=(const IoRing&) = delete;

    // This thread's ring, created on first use and destroyed at thread exit.
    static IoRing& threadLocal();

    // Prepares one SQE with `prepare` (which must not throw), submits it and waits for its
    // completion; returns the CQE's res (a negative errno on failure). Retries EINTR and EAGAIN.
    // If the kernel refuses the submission itself, throws Error, and so does every later call:
    // the refused SQE stays queued and must never run with a later submission.
    int submitAndWait(const std::function<void(io_uring_sqe&)>& prepare);

    // Writes all of `data` at `offset`, continuing after short writes and retrying EINTR/EAGAIN.
    // Throws Error("<what>: ...") on failure; `what` names the file for the message.
    void pwrite(int fd, std::span<const uint8_t> data, uint64_t offset, std::string_view what);

private:
    io_uring ring_{};
    bool usable_ = true;
};

}  // namespace rafsd
