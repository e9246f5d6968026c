#include "daemon/core/IoRing.h"

#include "format/Error.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace rafsd {

namespace {

// One SQE's length is an unsigned int; larger writes are split at a block multiple so direct-I/O
// alignment survives the split.
constexpr size_t kMaxWritePerSqe = size_t{1} << 30;

// What the usual io_uring_queue_init failures mean for someone running rafsd.
std::string_view setupHint(int err) {
    switch (err) {
    case EPERM: return " (io_uring is disabled for this process: see sysctl kernel.io_uring_disabled)";
    case ENOSYS: return " (the kernel was built without io_uring)";
    case ENOMEM: return " (on kernels before 5.12 raise RLIMIT_MEMLOCK)";
    default: return "";
    }
}

}  // namespace

IoRing::IoRing(unsigned entries) {
    const int ret = io_uring_queue_init(entries, &ring_, 0);
    if (ret < 0)
        rafs::fail("io_uring_queue_init: {}{}", std::strerror(-ret), setupHint(-ret));
}

IoRing::~IoRing() { io_uring_queue_exit(&ring_); }

IoRing& IoRing::threadLocal() {
    thread_local IoRing ring;
    return ring;
}

int IoRing::submitAndWait(const std::function<void(io_uring_sqe&)>& prepare) {
    if (!usable_) rafs::fail("io_uring: ring unusable after an earlier submission failure");
    // The ring only ever holds one request, so a free SQE always exists.
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) rafs::fail("io_uring: submission queue unexpectedly full");
    prepare(*sqe);

    for (;;) {
        const int ret = io_uring_submit_and_wait(&ring_, 1);
        if (ret >= 0) break;
        if (ret != -EINTR && ret != -EAGAIN) {
            // The SQE stays in the ring and would run with the next submission, after the
            // caller has freed its buffer.
            usable_ = false;
            rafs::failErrno("io_uring_submit_and_wait", -ret);
        }
    }
    io_uring_cqe* cqe = nullptr;
    for (;;) {
        // Returns at once when the completion is already there (the usual case).
        const int ret = io_uring_wait_cqe(&ring_, &cqe);
        if (ret == 0) break;
        if (ret != -EINTR) rafs::failErrno("io_uring_wait_cqe", -ret);
    }
    const int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    return res;
}

void IoRing::pwrite(int fd, std::span<const uint8_t> data, uint64_t offset, std::string_view what) {
    while (!data.empty()) {
        const auto length = static_cast<unsigned>(std::min(data.size(), kMaxWritePerSqe));
        const int res = submitAndWait([&](io_uring_sqe& sqe) {
            io_uring_prep_write(&sqe, fd, data.data(), length, offset);
        });
        if (res == -EINTR || res == -EAGAIN) continue;
        if (res < 0)
            rafs::failErrno(fmt::format("{}: write of {} bytes at offset {}", what, length, offset),
                            -res);
        if (res == 0) rafs::fail("{}: write at offset {} wrote nothing", what, offset);
        const auto written = static_cast<size_t>(res);
        data = data.subspan(written);
        offset += written;
    }
}

}  // namespace rafsd
