// An owned file descriptor, closed when it goes out of scope. A failed close() there is logged;
// where a failed close means lost data (a file just written), call close(what), which throws.
#pragma once

#include <string_view>

namespace rafsd {

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd();

    // A close-on-exec duplicate of `fd`; throws rafs::Error naming `what` if it cannot be made.
    static UniqueFd duplicate(int fd, std::string_view what);

    int get() const { return fd_; }
    int release();
    // Closes now; throws rafs::Error naming `what` if close() fails.
    void close(std::string_view what);

private:
    int fd_ = -1;
};

// Closes an fd owned elsewhere (an event's fd, a device fd handed over); a failure is logged
// naming `what`, since nothing written through these fds depends on close().
void closeOrWarn(int fd, std::string_view what);

}  // namespace rafsd
