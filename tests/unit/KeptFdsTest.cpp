#include "daemon/process/KeptFds.h"
#include "format/FileIo.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

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

TEST_CASE("kept fds: a worker's answer to a hand-over request reaches the supervisor once", "[process]") {
    KeptFds supervisor;
    KeptFds::Link link = KeptFds::makeLink();
    KeptFds worker;
    worker.attachLink(link.worker.get());
    CHECK(supervisor.serveLink(link.supervisor.get()));
    CHECK_FALSE(supervisor.takeHandOverAnswer());
    worker.answerHandOver(false);
    CHECK(supervisor.serveLink(link.supervisor.get()));
    CHECK(supervisor.takeHandOverAnswer() == false);
    CHECK_FALSE(supervisor.takeHandOverAnswer());
    worker.answerHandOver(true);
    CHECK(supervisor.serveLink(link.supervisor.get()));
    CHECK(supervisor.takeHandOverAnswer() == true);
}

TEST_CASE("kept fds: a reload passes the set on through an inheritable list, and a failed exec takes it back",
          "[process]") {
    rafs::UniqueFd file(::memfd_create("kept", MFD_CLOEXEC));
    REQUIRE(file.get() >= 0);
    KeptFds kept;
    kept.keep("fanotify", file.get());
    kept.keep("blob-a", file.get());
    const int group = kept.find("fanotify");

    rafs::UniqueFd list = kept.prepareExec();
    CHECK((::fcntl(list.get(), F_GETFD) & FD_CLOEXEC) == 0);
    CHECK((::fcntl(group, F_GETFD) & FD_CLOEXEC) == 0);
    kept.abortExec();
    CHECK((::fcntl(group, F_GETFD) & FD_CLOEXEC) != 0);

    // The list names each fd as this process has it.
    list = kept.prepareExec();
    const std::string text = rafs::readFile("/proc/self/fd/" + std::to_string(list.get()));
    CHECK(text == "blob-a " + std::to_string(kept.find("blob-a")) + "\nfanotify " + std::to_string(group) + "\n");
    kept.abortExec();
}

TEST_CASE("kept fds: the next program takes the set a reload passed on", "[process]") {
    rafs::UniqueFd file(::memfd_create("kept", MFD_CLOEXEC));
    REQUIRE(file.get() >= 0);
    // As the exec leaves them: inheritable copies, and the list naming them.
    const int group = ::dup(file.get());
    const int blob = ::dup(file.get());
    REQUIRE((group >= 0 && blob >= 0));
    rafs::UniqueFd list(::memfd_create("list", 0));
    REQUIRE(list.get() >= 0);
    const std::string text = "fanotify " + std::to_string(group) + "\nblob-a " + std::to_string(blob) + "\n";
    REQUIRE(::write(list.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    REQUIRE(::setenv(KeptFds::kReloadEnv, std::to_string(list.release()).c_str(), 1) == 0);
    KeptFds passed = KeptFds::fromReload();
    CHECK(std::getenv(KeptFds::kReloadEnv) == nullptr);
    CHECK(passed.names() == std::vector<std::string>{"blob-a", "fanotify"});
    CHECK(passed.find("fanotify") == group);
    CHECK(inodeOf(passed.find("blob-a")) == inodeOf(file.get()));
    CHECK((::fcntl(group, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(KeptFds::fromReload().empty());
}

TEST_CASE("kept fds: a malformed reload list is refused, naming the variable", "[process]") {
    REQUIRE(::setenv(KeptFds::kReloadEnv, "nonsense", 1) == 0);
    CHECK_THROWS_WITH(KeptFds::fromReload(), Catch::Contains(KeptFds::kReloadEnv));
    rafs::UniqueFd list(::memfd_create("list", 0));
    REQUIRE(list.get() >= 0);
    const std::string text = "fanotify 999\n";
    REQUIRE(::write(list.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    REQUIRE(::setenv(KeptFds::kReloadEnv, std::to_string(list.release()).c_str(), 1) == 0);
    CHECK_THROWS_WITH(KeptFds::fromReload(), Catch::Contains("fd 999 for fanotify is not open"));
}
