// What a mkrafs run made and would remove if it failed (a staging or work directory, a new output
// directory or OCI layout, a temporary file) is removed too when SIGINT, SIGTERM or SIGHUP ends
// the run: a signal's default action would skip the destructors that remove it on errors, and a
// run blocked on a stalled input (stdin, a registry) would never reach them.
// installInterruptCleanup() blocks those signals in the calling thread, and so in every thread it
// starts later, and starts a thread that waits for one: it removes every path still registered,
// prints one line and ends the process with status 128 + the signal's number.
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>

namespace rafs::build {

// Call once from main, before any other thread starts.
void installInterruptCleanup();

// `path` is removed (whole) if a signal ends the run while this object lives and holds it.
class RemovedOnInterrupt {
public:
    explicit RemovedOnInterrupt(std::filesystem::path path);
    ~RemovedOnInterrupt() { release(); }
    RemovedOnInterrupt(const RemovedOnInterrupt&) = delete;
    RemovedOnInterrupt& operator=(const RemovedOnInterrupt&) = delete;

    // The path is the run's output now, or gone: a signal leaves it alone.
    void release();

private:
    uint64_t id_ = 0;
};

// While held, a signal waits to clean up: for moves that make outputs visible, so that a signal
// finds either the parts (removed) or the whole (released), never a half-moved output.
std::unique_lock<std::recursive_mutex> holdInterrupts();

}  // namespace rafs::build
