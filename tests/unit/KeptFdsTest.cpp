#include "daemon/process/KeptFds.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using rafsd::KeptFds;

namespace {

// The inode an fd refers to, to tell whether two fds name the same file.
ino_t inodeOf(int fd) {
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    return st.st_ino;
}

}  // namespace

TEST_CASE("kept fds: what a worker keeps and drops reaches the supervisor, also after the worker is gone",
          "[process]") {
    KeptFds supervisor;
    KeptFds::Link link = KeptFds::makeLink();
    KeptFds worker;
    worker.attachLink(link.worker.get());

    rafs::UniqueFd file(::memfd_create("kept", MFD_CLOEXEC));
    REQUIRE(file.get() >= 0);
    worker.keep("blob-a", file.get());
    worker.keep("blob-b", file.get());
    worker.drop("blob-b");
    worker.drop("never-kept");  // ignored
    CHECK(worker.names() == std::vector<std::string>{"blob-a"});

    // The worker dies: its end closes, its messages and their fds are still queued.
    link.worker = rafs::UniqueFd();
    worker = KeptFds();
    CHECK_FALSE(supervisor.serveLink(link.supervisor.get()));
    REQUIRE(supervisor.names() == std::vector<std::string>{"blob-a"});
    CHECK(inodeOf(supervisor.find("blob-a")) == inodeOf(file.get()));
    CHECK(supervisor.find("blob-b") == -1);
}

TEST_CASE("kept fds: names the fd store would refuse are refused", "[process]") {
    KeptFds kept;
    rafs::UniqueFd file(::memfd_create("kept", MFD_CLOEXEC));
    CHECK_THROWS_WITH(kept.keep("a:b", file.get()), Catch::Matchers::Contains("without ':'"));
    CHECK_THROWS_WITH(kept.keep("", file.get()), Catch::Matchers::Contains("1 to 255"));
    CHECK_THROWS_WITH(kept.keep(std::string(256, 'x'), file.get()), Catch::Matchers::Contains("1 to 255"));
    CHECK(kept.empty());
}
