// Reload: `rafsd serve` replaces itself with the program installed at its path (a new version
// after an upgrade, or the same one to read a changed configuration) without ever letting go of
// the kernel objects its mounts live on. On SIGHUP (systemd's ExecReload) the supervisor checks
// the new program (`serve ... --check-config`), has its worker hand over (it stops taking control
// requests, saves the start traces and exits without unmounting: events it read and did not answer
// stay pending in the kernel and in the journal, as after a crash), and execs the new program in
// the same pid with the kept fds passed on (KeptFds::prepareExec). The new rafsd finds them as it
// finds systemd's fd store after a crash and takes every mount over the same way: fanotify answers
// the orphaned events, fscache writes `restore`, which needs Linux 6.8 or later (a reload of an
// fscache rafsd on an older kernel is refused, since its waiting readers would hang).
#pragma once

#include "daemon/process/KeptFds.h"

#include <string>
#include <vector>

namespace rafsd {

struct InPlaceRestart {
    std::string executable;         // this program's path as it started (/proc/self/exe)
    std::vector<std::string> argv;  // as it started
    int control_socket = -1;        // an activated control socket, passed on at fd 3, or -1
    bool needs_cachefiles_restore = false;

    static InPlaceRestart ofThisProcess(int argc, char** argv);

    // Whether the program now at `executable` would serve: it runs, and reads the configuration.
    // Throws Error saying why not (its own last line of output, or the kernel this needs).
    void check() const;
    // Replaces this process with it, `kept` passed on. Returns only by throwing Error, with `kept`
    // as it was.
    void exec(KeptFds& kept) const;
};

}  // namespace rafsd
