#include "format/FileLock.h"

#include "format/UniqueFd.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>
#include <fcntl.h>

#include <atomic>
#include <chrono>
#include <thread>

using rafs::LockOutcome;
using Clock = std::chrono::steady_clock;

namespace {

rafs::UniqueFd openDir(const std::filesystem::path& dir) {
    rafs::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(fd.get() >= 0);
    return fd;
}

}  // namespace

TEST_CASE("an flock is one holder's until it lets go, and a deadline bounds the wait for it", "[lock]") {
    const rafs::test::TempDir dir;
    // Two opens of one directory in one process: two holders, as two processes would be.
    rafs::UniqueFd first = openDir(dir.path());
    rafs::UniqueFd second = openDir(dir.path());
    CHECK(rafs::lockExclusive(first.get(), Clock::now(), "first") == LockOutcome::Locked);
    CHECK(rafs::lockExclusive(second.get(), Clock::now() - std::chrono::seconds(1), "second") == LockOutcome::TimedOut);
    const auto began = Clock::now();
    CHECK(rafs::lockExclusive(second.get(), began + std::chrono::milliseconds(50), "second") == LockOutcome::TimedOut);
    CHECK(Clock::now() - began >= std::chrono::milliseconds(50));

    // Without a deadline it waits, and gets the lock once the holder closes its fd.
    std::atomic<bool> locked{false};
    std::thread waiter([&] { locked = rafs::lockExclusive(second.get(), std::nullopt, "second") == LockOutcome::Locked; });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    CHECK_FALSE(locked);
    first = rafs::UniqueFd();
    waiter.join();
    CHECK(locked);
}
