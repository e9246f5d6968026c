#include "daemon/api/UnixListener.h"

#include "daemon/api/ControlProtocol.h"
#include "format/Error.h"
#include "format/FileLock.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace rafsd {
namespace {

int bindTo(const rafs::UniqueFd& fd, const sockaddr_un& address) {
    return ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address);
}

void createDirectories(const std::filesystem::path& dir) {
    if (dir.empty() || dir == dir.root_path()) return;
    struct stat st {};
    // Whether an existing path is a directory, bind() will tell.
    if (::stat(dir.c_str(), &st) == 0) return;
    if (errno != ENOENT) rafs::failErrno(fmt::format("cannot create {}", dir.string()));
    createDirectories(dir.parent_path());
    if (::mkdir(dir.c_str(), 0755) != 0) {
        if (errno == EEXIST) return;
        rafs::failErrno(fmt::format("cannot create {}", dir.string()));
    }
    // mkdir() applied the daemon's umask, which may be stricter.
    if (::chmod(dir.c_str(), 0755) != 0) rafs::failErrno(fmt::format("cannot chmod {}", dir.string()));
}

// Throws if a process listens on `socket`; false if nothing is there, true for a socket file
// nobody listens on (left by a rafsd that died).
bool staleSocket(const std::filesystem::path& socket, const sockaddr_un& address) {
    struct stat st {};
    if (::lstat(socket.c_str(), &st) != 0) {
        if (errno == ENOENT) return false;
        rafs::failErrno(fmt::format("cannot bind {}", socket.string()));
    }
    if (!S_ISSOCK(st.st_mode)) rafs::fail("cannot bind {}: it exists and is not a socket", socket.string());
    rafs::UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (probe.get() < 0) rafs::failErrno("cannot create a unix socket");
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 || errno == EAGAIN) {
        // EAGAIN: a listener whose backlog is full, busy but alive.
        rafs::fail("another process is already listening on {}", socket.string());
    }
    if (errno != ECONNREFUSED) rafs::failErrno(fmt::format("cannot bind {}", socket.string()));
    return true;
}

// Called when bind() found `socket` in use: removes it if it is a socket nobody listens on, else
// explains why not.
void removeStale(const std::filesystem::path& socket, const sockaddr_un& address) {
    if (!staleSocket(socket, address)) return;  // removed meanwhile
    if (::unlink(socket.c_str()) != 0 && errno != ENOENT) {
        rafs::failErrno(fmt::format("cannot remove the stale socket {}", socket.string()));
    }
}

// Held from bind() to listen(), and in close() from the check that the file is ours to its
// removal: without it, between one rafsd's bind() and listen() another binding the same path finds
// nobody listening, takes the file as stale and replaces it, and two run, one unreachable (or one
// closing removes the file another just made). An flock on the socket's directory, which is there
// already and stays; held for a few system calls, so a wait past kLockWait is another process's
// lock on that directory.
constexpr auto kLockWait = std::chrono::seconds(10);

rafs::UniqueFd lockDirectoryOf(const std::filesystem::path& socket) {
    const std::filesystem::path dir = socket.parent_path().empty() ? "." : socket.parent_path();
    rafs::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) rafs::failErrno(fmt::format("cannot bind {}: opening its directory to lock it", socket.string()));
    const auto outcome =
        rafs::lockExclusive(fd.get(), std::chrono::steady_clock::now() + kLockWait, "cannot bind " + socket.string());
    if (outcome == rafs::LockOutcome::TimedOut) {
        rafs::fail("cannot bind {}: another process has held a lock on its directory for {} s", socket.string(),
                   kLockWait.count());
    }
    return fd;  // Unsupported: a socket on such a file system goes unguarded
}

}  // namespace

UnixListener UnixListener::bind(const std::filesystem::path& path, mode_t mode, int type_flags) {
    const sockaddr_un address = unixAddress(path);
    createDirectories(path.parent_path());
    const rafs::UniqueFd lock = lockDirectoryOf(path);
    UnixListener listener;
    listener.fd_ = rafs::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0));
    if (listener.fd_.get() < 0) rafs::failErrno("cannot create a unix socket");
    if (bindTo(listener.fd_, address) != 0) {
        if (errno != EADDRINUSE) rafs::failErrno(fmt::format("cannot bind {}", path.string()));
        removeStale(path, address);
        if (bindTo(listener.fd_, address) != 0) rafs::failErrno(fmt::format("cannot bind {}", path.string()));
    }
    struct stat st {};
    // Made by this bind, under the lock this thread holds: a failure removes it here (close()
    // would wait for that lock).
    try {
        if (::stat(path.c_str(), &st) != 0) rafs::failErrno(fmt::format("cannot stat {}", path.string()));
        // Before listen(): until then connecting fails anyway, so the umask's mode is never usable.
        if (::chmod(path.c_str(), mode) != 0) rafs::failErrno(fmt::format("cannot chmod {}", path.string()));
        if (::listen(listener.fd_.get(), SOMAXCONN) != 0) {
            rafs::failErrno(fmt::format("cannot listen on {}", path.string()));
        }
    } catch (...) {
        ::unlink(path.c_str());
        throw;
    }
    listener.path_ = path;
    listener.dev_ = st.st_dev;
    listener.ino_ = st.st_ino;
    return listener;
}

void UnixListener::checkFree(const std::filesystem::path& path) { staleSocket(path, unixAddress(path)); }

UnixListener UnixListener::adopt(rafs::UniqueFd fd) {
    UnixListener listener;
    listener.fd_ = std::move(fd);
    return listener;
}

UnixListener::UnixListener(UnixListener&& other) noexcept
    : fd_(std::move(other.fd_)), path_(std::move(other.path_)), dev_(other.dev_), ino_(other.ino_) {
    other.path_.clear();
}

UnixListener& UnixListener::operator=(UnixListener&& other) noexcept {
    if (this != &other) {
        close();
        fd_ = std::move(other.fd_);
        path_ = std::move(other.path_);
        other.path_.clear();
        dev_ = other.dev_;
        ino_ = other.ino_;
    }
    return *this;
}

void UnixListener::close() {
    fd_ = rafs::UniqueFd();
    if (path_.empty()) return;
    rafs::UniqueFd lock;
    try {
        lock = lockDirectoryOf(path_);
    } catch (...) {  // from a destructor or a noexcept move: nothing may escape
        // Not this file's to remove if it cannot be checked under the lock: left, it is stale
        // for the next bind().
        path_.clear();
        return;
    }
    struct stat st {};
    // Only our own socket: another rafsd may have replaced it. A socket file left behind is
    // harmless, the next bind() removes it as stale.
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) ::unlink(path_.c_str());
    path_.clear();
}

}  // namespace rafsd
