// The fds whose kernel objects must outlive the worker that uses them: the bound /dev/cachefiles,
// the fanotify group, its journal of pending events and the sparse cache files opened before they
// were marked. The supervisor holds a copy of each, and under systemd the service's fd store holds
// another (FDSTORE=1, FDNAME=<name>; FileDescriptorStoreMax= in the unit), so that the death of a
// worker, or of the whole service, leaves them alive for the next worker to take over.
//
// Both processes use this class. The supervisor owns the set and offers each fd to the fd store. A
// worker starts with the copies fork() gave it and adds or drops fds at run time; each change is
// sent to the supervisor over a SOCK_SEQPACKET link (the fd itself with SCM_RIGHTS). A message sent
// stays queued, with its fd, even if the worker dies right after: the supervisor reads the link
// before it starts the next worker.
#pragma once

#include "format/UniqueFd.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace rafsd {

class KeptFds {
public:
    KeptFds() = default;
    KeptFds(KeptFds&&) = default;
    KeptFds& operator=(KeptFds&&) = default;

    // The named fds systemd's fd store passed this process (LISTEN_FDS, LISTEN_FDNAMES), marked
    // close-on-exec; sockets (an activated control socket) and unnamed fds are left alone. The
    // environment stays set, so the control socket can still be found.
    static KeptFds fromSystemd();

    // A reload (InPlaceRestart.h) passes the set to the next program of the same process:
    // prepareExec() makes every fd inheritable and returns an inheritable memfd listing them
    // ("NAME FD" lines), whose number goes into the environment as kReloadEnv; abortExec() makes
    // them close-on-exec again after a failed exec. fromReload() is the set so passed to this
    // program (close-on-exec again, kReloadEnv removed), empty if none was.
    static constexpr const char* kReloadEnv = "RAFSD_RELOAD_FDS";
    rafs::UniqueFd prepareExec();
    void abortExec();
    static KeptFds fromReload();

    // The fd kept under `name`, or -1. Still owned by this set.
    int find(const std::string& name) const;
    bool empty() const { return fds_.empty(); }
    std::vector<std::string> names() const;

    // Keeps a duplicate of `fd` under `name` (replacing one of that name): in this process, in the
    // supervisor if this is a worker, and in systemd's fd store. Throws rafs::Error when the fd
    // cannot be kept; a fd store that is missing or refuses is only logged.
    void keep(const std::string& name, int fd);
    // Drops `name` everywhere; unknown names are ignored.
    void drop(const std::string& name);

    // Supervisor side. link(): the socketpair end a worker gets; the supervisor keeps the other.
    // serveLink() applies every message queued on it (call when it polls readable, and before
    // starting another worker); false once the worker's end is closed.
    struct Link {
        rafs::UniqueFd supervisor;
        rafs::UniqueFd worker;
    };
    static Link makeLink();
    bool serveLink(int link);

    // Worker side: send every later keep() and drop() over `link` as well.
    void attachLink(int link) { link_ = link; }
    // Worker side: answers the supervisor's request to hand over for a reload: accepted (it
    // exits without unmounting), or declined (it serves mounts whose kernel objects are not kept).
    // Supervisor side: the answer received since the last call, if any.
    void answerHandOver(bool accepted);
    std::optional<bool> takeHandOverAnswer();

private:
    void keepLocal(const std::string& name, rafs::UniqueFd fd);
    void offerToSystemd(const std::string& name, int fd);
    static void removeFromSystemd(const std::string& name);

    std::map<std::string, rafs::UniqueFd> fds_;
    int link_ = -1;  // worker side: not owned
    std::optional<bool> hand_over_answer_;  // supervisor side
    bool warned_names_ = false;
};

}  // namespace rafsd
