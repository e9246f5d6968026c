// Reload: `rafsd serve` replaces itself with the program installed at its path (a new version
// after an upgrade, or the same one to read a changed configuration) without ever letting go of
// the kernel objects its mounts live on. On SIGHUP (systemd's ExecReload) the supervisor checks
// the new program (`serve ... --check-config`), has its worker hand over (it stops taking control
// requests, saves the start traces and exits without unmounting: events it read and did not answer
// stay pending in the kernel and in the journal, as after a crash), and execs the new program in
// the same pid with the kept fds passed on (KeptFds::prepareExec). The new rafsd finds them as it
// finds systemd's fd store after a crash and takes every mount over the same way: fanotify answers
// the orphaned events, fscache writes `restore`, which a kernel without it cannot do (the reload is
// then refused, since its waiting readers would hang: SupervisorOptions::no_handover).
//
// Until the new program serves, nothing but it would hold the kernel objects (outside systemd's fd
// store), and it may still fail (a configuration changed again, a build that passes the check and
// breaks later). So before the exec the supervisor forks a holder: a copy of the old program, with
// the kept fds, that waits on a pipe. The new supervisor writes a byte to it once its first worker
// serves (release()), and the holder exits; if every process of the new program ends first, the
// holder carries on as the supervisor, with the previous program and configuration.
#pragma once

#include "daemon/process/KeptFds.h"

#include <optional>
#include <string>
#include <vector>

namespace rafsd {

struct InPlaceRestart {
    std::string executable;         // this program's path as it started: argv[0] made absolute, else /proc/self/exe
    std::vector<std::string> argv;  // as it started
    int control_socket = -1;        // an activated control socket, passed on at fd 3, or -1
    std::string engine;             // whose kernel objects are passed on
    std::string state_dir;          // where the mount table is: the new configuration must agree
    std::string cache_dir;          // where the mounts' cache files and chunk maps are: the same

    static InPlaceRestart ofThisProcess(int argc, char** argv);

    // Whether the program now at `executable` would serve: it runs, reads the configuration, and
    // finds the mount table and the cache where this one keeps them. Throws Error saying why not (its own last
    // line of output).
    void check() const;
    // Replaces this process with it, `kept` and `release` (the write end of the holder's pipe)
    // passed on. Returns only by throwing Error, with `kept` as it was.
    void exec(KeptFds& kept, int release) const;

    // In the new program: the engine whose objects were passed on, if this process was started by
    // a reload (read once).
    static std::optional<std::string> reloadedEngine();
    // In the new program: the write end of the holder's pipe, close-on-exec (invalid if none).
    static rafs::UniqueFd takeRelease();
    // Tells the holder the new program serves; closes `release`. Failures are logged.
    static void release(rafs::UniqueFd& release);
    // The holder: waits on the read end of its pipe. True if the new program serves (the holder
    // may exit), false if it ended first.
    static bool waitForRelease(int release);
};

}  // namespace rafsd
