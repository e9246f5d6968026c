// What a mkrafs run made and removes if it fails (a staging or work directory, a new output
// directory or OCI layout, a temporary file: RemovedUnlessKept) is removed too when SIGINT,
// SIGTERM or SIGHUP ends the run: a signal's default action would skip the destructors that remove it on errors, and a
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

// A path the run made that is not (yet) its output: removed (whole) when this object ends, and
// when a signal ends the run while it lives, unless keep() made it output first. The owners of
// the staging and work directories, a new output directory or layout and temporary files hold one
// each, so errors and signals clean up the same way.
class RemovedUnlessKept {
public:
    explicit RemovedUnlessKept(std::filesystem::path path);
    ~RemovedUnlessKept();
    RemovedUnlessKept(const RemovedUnlessKept&) = delete;
    RemovedUnlessKept& operator=(const RemovedUnlessKept&) = delete;

    // The path is the run's output now, or gone: neither the end of this object nor a signal
    // removes it.
    void keep();
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    uint64_t id_ = 0;  // registration for the signal watcher; 0 once kept
};

// While held, a signal waits to clean up: for moves that make outputs visible, so that a signal
// finds either the parts (removed) or the whole (released), never a half-moved output.
std::unique_lock<std::recursive_mutex> holdInterrupts();

}  // namespace rafs::build
