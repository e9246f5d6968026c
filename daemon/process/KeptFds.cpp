#include "daemon/process/KeptFds.h"

#include "format/Error.h"
#include "format/FileIo.h"
#include "daemon/core/Log.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <utility>

namespace rafsd {

namespace {

using rafs::fail;
using rafs::failErrno;

// The fd store's names: up to 255 printable ASCII characters without ':' (sd_pid_notify(3)).
constexpr size_t kMaxName = 255;
// systemd passes the stored fds' names to a restarted service in one environment variable,
// LISTEN_FDNAMES, which execve(2) refuses above MAX_ARG_STRLEN (32 pages: 128 KiB). Beyond it
// the restart after a crash fails, and the stored kernel objects go with the failed unit.
constexpr size_t kListenFdNamesLimit = 128 * 1024;

void checkName(const std::string& name) {
    if (name.empty() || name.size() > kMaxName) fail("kept fd name '{}': 1 to {} characters", name, kMaxName);
    for (const char c : name) {
        if (c <= ' ' || c > '~' || c == ':') fail("kept fd name '{}': only printable ASCII without ':'", name);
    }
}

}  // namespace

KeptFds KeptFds::fromSystemd() {
    KeptFds kept;
    char** names = nullptr;
    const int n = sd_listen_fds_with_names(0, &names);
    if (n < 0) {
        log::warn("LISTEN_FDS from systemd unusable: {}", std::strerror(-n));
        return kept;
    }
    for (int i = 0; i < n; ++i) {
        const int fd = SD_LISTEN_FDS_START + i;
        const std::string name = names != nullptr ? names[i] : "";
        // Kept fds are never sockets; a socket is an activated control socket, whatever its name.
        if (name.empty() || name == "unknown" || sd_is_socket(fd, AF_UNSPEC, 0, -1) > 0) continue;
        if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) failErrno(fmt::format("fcntl on stored fd {}", name));
        kept.fds_[name] = rafs::UniqueFd(fd);
    }
    if (names != nullptr) {
        for (int i = 0; i < n; ++i) std::free(names[i]);
        std::free(names);
    }
    return kept;
}

rafs::UniqueFd KeptFds::prepareExec() {
    rafs::UniqueFd list(::memfd_create("rafsd-reload-fds", 0));
    if (list.get() < 0) failErrno("memfd_create");
    std::string text;
    for (const auto& [name, fd] : fds_) text += fmt::format("{} {}\n", name, fd.get());
    rafs::writeAll(list.get(), {reinterpret_cast<const uint8_t*>(text.data()), text.size()}, "the reload's fd list");
    for (const auto& [name, fd] : fds_) {
        if (::fcntl(fd.get(), F_SETFD, 0) != 0) {
            const int err = errno;
            abortExec();
            failErrno(fmt::format("passing {} on", name), err);
        }
    }
    return list;
}

void KeptFds::abortExec() {
    for (const auto& [name, fd] : fds_) {
        if (::fcntl(fd.get(), F_SETFD, FD_CLOEXEC) != 0) log::error("{}: cannot make it close-on-exec again: {}", name, std::strerror(errno));
    }
}

KeptFds KeptFds::fromReload() {
    KeptFds kept;
    const char* env = std::getenv(kReloadEnv);
    if (env == nullptr) return kept;
    const std::string value = env;
    ::unsetenv(kReloadEnv);
    int list_fd = -1;
    if (std::from_chars(value.data(), value.data() + value.size(), list_fd).ptr != value.data() + value.size() ||
        list_fd < 0) {
        fail("{}={}: not the fd of a list of kept fds", kReloadEnv, value);
    }
    const rafs::UniqueFd list(list_fd);
    std::istringstream lines(rafs::readFile(fmt::format("/proc/self/fd/{}", list_fd), 16 << 20));
    std::string name;
    int fd = -1;
    while (lines >> name >> fd) {
        checkName(name);
        if (fd < 0 || fd == list_fd || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
            fail("{}: fd {} for {} is not open", kReloadEnv, fd, name);
        }
        kept.fds_[name] = rafs::UniqueFd(fd);
    }
    if (!lines.eof()) fail("{}: a line of the kept fd list is not \"NAME FD\"", kReloadEnv);
    return kept;
}

int KeptFds::find(const std::string& name) const {
    const auto it = fds_.find(name);
    return it == fds_.end() ? -1 : it->second.get();
}

std::vector<std::string> KeptFds::names() const {
    std::vector<std::string> out;
    for (const auto& [name, fd] : fds_) out.push_back(name);
    return out;
}

void KeptFds::keepLocal(const std::string& name, rafs::UniqueFd fd) { fds_[name] = std::move(fd); }

void KeptFds::keep(const std::string& name, int fd) {
    checkName(name);
    rafs::UniqueFd copy = rafs::UniqueFd::duplicate(fd, name);
    if (link_ >= 0) {
        const std::string message = "+" + name;
        iovec iov{const_cast<char*>(message.data()), message.size()};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        const int sent_fd = copy.get();
        std::memcpy(CMSG_DATA(cmsg), &sent_fd, sizeof sent_fd);
        if (::sendmsg(link_, &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(message.size())) {
            failErrno(fmt::format("cannot hand {} to the supervisor", name));
        }
    } else {
        offerToSystemd(name, copy.get());
    }
    keepLocal(name, std::move(copy));
}

void KeptFds::drop(const std::string& name) {
    if (fds_.erase(name) == 0) return;
    if (link_ >= 0) {
        const std::string message = "-" + name;
        if (::send(link_, message.data(), message.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(message.size())) {
            log::warn("cannot tell the supervisor to drop {}: {}", name, std::strerror(errno));
        }
    } else {
        removeFromSystemd(name);
    }
}

void KeptFds::answerHandOver(bool accepted) {
    if (link_ < 0) return;
    if (::send(link_, accepted ? ">" : "!", 1, MSG_NOSIGNAL) != 1) {
        log::warn("cannot answer the supervisor: {}", std::strerror(errno));
    }
}

std::optional<bool> KeptFds::takeHandOverAnswer() { return std::exchange(hand_over_answer_, std::nullopt); }

KeptFds::Link KeptFds::makeLink() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) failErrno("socketpair");
    return {rafs::UniqueFd(fds[0]), rafs::UniqueFd(fds[1])};
}

bool KeptFds::serveLink(int link) {
    for (;;) {
        char buffer[kMaxName + 2];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        iovec iov{buffer, sizeof buffer};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(link, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return true;
            failErrno("reading the worker's kept fds");
        }
        if (n == 0) return false;
        rafs::UniqueFd received;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                int fd = -1;
                std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
                received = rafs::UniqueFd(fd);
            }
        }
        if (n == 1 && (buffer[0] == '!' || buffer[0] == '>')) {
            hand_over_answer_ = buffer[0] == '>';
            continue;
        }
        const std::string name(buffer + 1, n > 1 ? static_cast<size_t>(n) - 1 : 0);
        if (n < 2 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || (buffer[0] != '+' && buffer[0] != '-')) {
            log::error("malformed message from the worker on the kept-fd link; ignored");
            continue;
        }
        if (buffer[0] == '-') {
            if (fds_.erase(name) != 0) removeFromSystemd(name);
            continue;
        }
        if (received.get() < 0) {
            log::error("worker asked to keep {} without an fd; ignored", name);
            continue;
        }
        offerToSystemd(name, received.get());
        keepLocal(name, std::move(received));
    }
}

void KeptFds::offerToSystemd(const std::string& name, int fd) {
    if (std::getenv("NOTIFY_SOCKET") == nullptr) return;
    size_t names = name.size();
    if (!warned_names_) {
        for (const auto& [kept, ignored] : fds_) names += kept.size() + 1;
    }
    if (!warned_names_ && names > kListenFdNamesLimit * 3 / 4) {
        log::warn("systemd's fd store: {} kept fds, whose names take {} of the {} bytes systemd can pass to a restarted "
                  "rafsd (LISTEN_FDNAMES): beyond that a restart after a crash fails and the mounts' kernel objects are "
                  "released; unmount images no longer used", fds_.size() + 1, names, kListenFdNamesLimit);
        warned_names_ = true;
    }
    const std::string state = "FDSTORE=1\nFDNAME=" + name;
    int copy = fd;
    const int r = sd_pid_notify_with_fds(0, 0, state.c_str(), &copy, 1);
    if (r < 0) log::warn("systemd fd store refused {}: {}; a restart of rafsd cannot take it over", name, std::strerror(-r));
}

void KeptFds::removeFromSystemd(const std::string& name) {
    if (std::getenv("NOTIFY_SOCKET") == nullptr) return;
    const std::string state = "FDSTOREREMOVE=1\nFDNAME=" + name;
    if (const int r = sd_notify(0, state.c_str()); r < 0) {
        log::warn("cannot remove {} from systemd's fd store: {}", name, std::strerror(-r));
    }
}

}  // namespace rafsd
