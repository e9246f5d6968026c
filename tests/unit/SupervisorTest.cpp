// supervise() in a child process of its own (it wants a single-threaded process with the stop
// signals blocked), with a worker that serves and then dies as a crash would.
#include "daemon/process/StopSignals.h"
#include "daemon/process/Supervisor.h"
#include "format/UniqueFd.h"

#include <catch2/catch.hpp>

#include <csignal>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct Outcome {
    int status = -1;   // supervise()'s return value
    int workers = 0;   // workers started
};

// Runs supervise() with `options` and a worker that, the first time, serves and is killed; a
// worker after it exits 0 at once.
Outcome superviseDyingWorker(rafsd::SupervisorOptions options) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    rafs::UniqueFd read_end(fds[0]), write_end(fds[1]);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        rafsd::blockStopSignals();
        // Each worker is a fork of the supervisor: `restored` tells the first from those after it.
        const int status = rafsd::supervise(rafsd::KeptFds(), false, options,
                                            [&](rafsd::KeptFds&, bool restored, const std::function<void()>& ready) {
                                                (void)!::write(write_end.get(), "w", 1);
                                                if (restored) return 0;
                                                ready();
                                                ::raise(SIGKILL);
                                                return 0;
                                            });
        ::_exit(status);
    }
    write_end = rafs::UniqueFd();
    Outcome outcome;
    char byte = 0;
    while (::read(read_end.get(), &byte, 1) == 1) ++outcome.workers;
    int wstatus = 0;
    REQUIRE(::waitpid(child, &wstatus, 0) == child);
    REQUIRE(WIFEXITED(wstatus));
    outcome.status = WEXITSTATUS(wstatus);
    return outcome;
}

}  // namespace

TEST_CASE("supervisor: a worker that served and died is followed by another, unless the kernel cannot hand "
          "its mounts over", "[process]") {
    rafsd::SupervisorOptions options;
    options.engine = "fscache";
    const Outcome failover = superviseDyingWorker(options);
    CHECK(failover.workers == 2);
    CHECK(failover.status == 0);

    // Another worker would loop on a takeover the kernel cannot do (fscache without `restore`).
    options.no_handover = "this kernel (6.1.0) has no cachefiles 'restore'";
    const Outcome given_up = superviseDyingWorker(options);
    CHECK(given_up.workers == 1);
    CHECK(given_up.status == 1);
}
