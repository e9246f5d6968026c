// An owned file descriptor, closed when it goes out of scope. The one fd owner of mkrafs and rafsd.
// close() there ignores a failure: the descriptor is released whatever close returns (close(2)),
// and only a file just written can lose data on it; for those call close(what), which throws.
#pragma once

#include <string_view>

namespace rafs {

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd();

    // A close-on-exec duplicate of `fd`; throws Error naming `what` if it cannot be made.
    static UniqueFd duplicate(int fd, std::string_view what);

    int get() const { return fd_; }
    int release();
    // Closes now; throws Error naming `what` if close() fails.
    void close(std::string_view what);

private:
    int fd_ = -1;
};

}  // namespace rafs
