#include "format/ChildProcess.h"

#include <catch2/catch.hpp>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>

using rafs::ChildRun;
using rafs::runChild;

TEST_CASE("child process: output, status, its last line, stderr only when asked", "[child]") {
    ChildRun run;
    run.argv = {"/bin/sh", "-c", "read x; echo \"got $x\"; echo oops >&2; echo 'last words'; echo; exit 4"};
    run.input = "hello\n";
    const rafs::ChildResult quiet = runChild(run);
    CHECK(quiet.exitedWith(4));
    CHECK(quiet.output == "got hello\nlast words\n\n");
    CHECK(quiet.firstLine() == "got hello");
    CHECK(quiet.lastLine() == "last words");
    run.stderr_to_output = true;
    CHECK(runChild(run).output == "got hello\noops\nlast words\n\n");
}

TEST_CASE("child process: killed at its deadline, output bounded", "[child]") {
    ChildRun run;
    run.argv = {"/bin/sh", "-c", "head -c 100000 /dev/zero; exec sleep 30"};
    run.timeout = std::chrono::milliseconds(300);
    run.max_output = 1000;
    const auto start = std::chrono::steady_clock::now();
    const rafs::ChildResult result = runChild(run);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
    CHECK(result.timed_out);
    CHECK_FALSE(result.exitedWith(0));
    CHECK(result.output.size() == 1000);
    // Its output closed, the child lingering: still bound by the deadline.
    run.argv = {"/bin/sh", "-c", "echo bye; exec >&- 2>&-; exec sleep 30"};
    const auto again = std::chrono::steady_clock::now();
    const rafs::ChildResult lingering = runChild(run);
    CHECK(std::chrono::steady_clock::now() - again < std::chrono::seconds(10));
    CHECK(lingering.timed_out);
    CHECK(lingering.output == "bye\n");
    // What it started goes with it: a script's own children (a helper waiting on something).
    run.argv = {"/bin/sh", "-c", "sleep 30 & echo $!; exec >&- 2>&-; wait"};
    const rafs::ChildResult script = runChild(run);
    CHECK(script.timed_out);
    const pid_t grandchild = std::stoi(script.output);
    // Gone, or a zombie its new parent has not reaped yet.
    const auto ended = [&] {
        std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
        std::string pid, comm, state;
        return !(stat >> pid >> comm >> state) || state == "Z";
    };
    bool gone = false;
    for (int i = 0; i < 500 && !gone; ++i) {
        gone = ended();
        if (!gone) ::usleep(2000);
    }
    CHECK(gone);
}

TEST_CASE("child process: no signal of ours blocked in it; a program that does not exist is an error", "[child]") {
    sigset_t hup, old;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    REQUIRE(pthread_sigmask(SIG_BLOCK, &hup, &old) == 0);
    ChildRun run;
    run.argv = {"/bin/sh", "-c", "grep SigBlk /proc/self/status"};
    const rafs::ChildResult result = runChild(run);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    CHECK(result.output == "SigBlk:\t0000000000000000\n");
    run.argv = {"/nonexistent/program"};
    CHECK_THROWS_WITH(runChild(run), Catch::Contains("/nonexistent/program"));
}
