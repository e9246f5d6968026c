// Running another program to its end, with a deadline: the docker credential helpers mkrafs and
// rafsd ask for registry credentials, and the new rafsd a reload checks before it hands over.
// The child gets a few bytes on its stdin, its stdout (and stderr, if asked) is collected up to a
// bound, it sees no other fd of ours (the kernel's fds without O_CLOEXEC, cachefiles' anonymous fds
// and fanotify's event fds, would keep their objects open in a child that outlives a crashed
// daemon), and it starts with no signal blocked whatever the caller blocks.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace rafs {

struct ChildRun {
    std::vector<std::string> argv;  // argv[0]: a path, or a name looked up in PATH
    std::string input;              // for its stdin; a few bytes, so that it fits the pipe
    bool stderr_to_output = false;  // else its stderr is /dev/null (a helper's may name secrets)
    std::chrono::milliseconds timeout{10'000};
    size_t max_output = 64 * 1024;  // kept of its output; the rest is read and dropped
};

struct ChildResult {
    int status = 0;              // as waitpid(2) gives it
    std::string output;
    bool timed_out = false;      // killed (SIGKILL) at the deadline
    bool input_written = true;   // all of `input` reached its stdin
    bool exitedWith(int code) const;
    // Its output's first line, at most 200 characters.
    std::string firstLine() const;
    // The last non-empty line of its output, at most 300 characters.
    std::string lastLine() const;
};

// Throws Error naming argv[0] when it cannot be started.
ChildResult runChild(const ChildRun& run);

}  // namespace rafs
