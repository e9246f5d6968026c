#include "registry/CredentialStore.h"

#include "format/Error.h"
#include "format/UniqueFd.h"
#include "registry/Base64.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

extern char** environ;

namespace registry {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxHelperOutput = 64 * 1024;
constexpr int kHelperTimeoutMs = 10'000;

// write(2) to a helper's stdin that never raises SIGPIPE: a helper that exits without reading it
// must not end the process (rafsd, mkrafs). SIGPIPE is blocked on this thread for the write, and
// one the write raised is taken off the thread's pending signals before it is unblocked.
ssize_t writeWithoutSigpipe(int fd, std::string_view data) {
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    if (const int rc = ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old); rc != 0) rafs::failErrno("pthread_sigmask", rc);
    const ssize_t wrote = ::write(fd, data.data(), data.size());
    const int write_errno = errno;
    if (wrote < 0 && write_errno == EPIPE) {
        const timespec now{0, 0};
        while (::sigtimedwait(&pipe_only, nullptr, &now) < 0 && errno == EINTR) {
        }
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = write_errno;
    return wrote;
}

// "https://host:5000/v1/" -> "host:5000".
std::string hostOfKey(std::string key) {
    if (auto scheme = key.find("://"); scheme != std::string::npos) key.erase(0, scheme + 3);
    if (auto slash = key.find('/'); slash != std::string::npos) key.erase(slash);
    return key;
}

std::optional<Credentials> fromAuthEntry(const nlohmann::json& entry, const fs::path& path, const std::string& key) {
    if (!entry.is_object()) return std::nullopt;
    if (auto it = entry.find("auth"); it != entry.end() && it->is_string() && !it->get<std::string>().empty()) {
        auto decoded = base64Decode(it->get<std::string>());
        const size_t colon = decoded ? decoded->find(':') : std::string::npos;
        if (colon == std::string::npos) rafs::fail("{}: auths.\"{}\".auth is not base64 of user:password", path.string(), key);
        return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
    }
    auto user = entry.find("username");
    auto pass = entry.find("password");
    if (user != entry.end() && pass != entry.end() && user->is_string() && pass->is_string()) {
        return Credentials{user->get<std::string>(), pass->get<std::string>()};
    }
    return std::nullopt;
}

}  // namespace

std::optional<Credentials> runCredentialHelper(const std::string& helper, const std::string& host) {
    const bool valid_name = !helper.empty() && std::ranges::all_of(helper, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    });
    const std::string program = "docker-credential-" + helper;
    if (!valid_name) rafs::fail("credential helper '{}' is not a helper name", helper);
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) rafs::failErrno("pipe");
    rafs::UniqueFd in_read(in[0]), in_write(in[1]);
    if (::pipe2(out, O_CLOEXEC) != 0) rafs::failErrno("pipe");
    rafs::UniqueFd out_read(out[0]), out_write(out[1]);
    posix_spawn_file_actions_t actions;
    if (const int rc = posix_spawn_file_actions_init(&actions); rc != 0) rafs::failErrno(program, rc);
    // Its stderr is not ours to pass on: it may name secrets. Nor any other fd of ours: the
    // kernel's fds without O_CLOEXEC (cachefiles' anonymous fds, fanotify's event fds) would keep
    // their objects open in a helper that outlives a crashed daemon, and its successor could not
    // answer what the kernel asks about them.
    int rc = posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    if (rc == 0) rc = posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    char verb[] = "get";
    std::string argv0 = program;
    char* argv[] = {argv0.data(), verb, nullptr};
    pid_t pid = 0;
    const int spawned = rc != 0 ? rc : posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) rafs::failErrno(program, spawned);
    in_read = rafs::UniqueFd();
    out_write = rafs::UniqueFd();
    // The host is a few bytes: it fits the pipe, so this does not block.
    const ssize_t wrote = writeWithoutSigpipe(in_write.get(), host);
    in_write = rafs::UniqueFd();
    std::string output;
    bool timed_out = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kHelperTimeoutMs);
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            timed_out = true;
            break;
        }
        pollfd p{out_read.get(), POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) continue;
        char buffer[4096];
        const ssize_t n = ::read(out_read.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (output.size() < kMaxHelperOutput) output.append(buffer, static_cast<size_t>(n));
    }
    if (timed_out) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) rafs::fail("{} get: no answer within {} s", program, kHelperTimeoutMs / 1000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        // The helpers' own message for "nothing stored" (docker-credential-helpers).
        if (output.find("credentials not found") != std::string::npos) return std::nullopt;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127) rafs::fail("{}: not found in PATH", program);
        std::string first_line = output.substr(0, std::min(output.find('\n'), size_t{200}));
        rafs::fail("{} get failed ({})", program, first_line.empty() ? "no message" : first_line);
    }
    // After the exit status: a helper that failed without reading says more than the broken pipe.
    if (wrote != static_cast<ssize_t>(host.size())) rafs::fail("{} get: could not write the host to it", program);
    const auto json = nlohmann::json::parse(output, nullptr, false);
    if (!json.is_object() || !json.contains("Username") || !json.contains("Secret") || !json["Username"].is_string() ||
        !json["Secret"].is_string()) {
        rafs::fail("{} get: the answer is not {{\"Username\", \"Secret\"}} JSON", program);
    }
    return Credentials{json["Username"].get<std::string>(), json["Secret"].get<std::string>()};
}

CredentialStore::CredentialStore(fs::path path) : path_(path.empty() ? defaultPath() : std::move(path)) {}

fs::path CredentialStore::defaultPath() {
    if (const char* dir = std::getenv("DOCKER_CONFIG"); dir != nullptr && dir[0] != '\0') {
        return fs::path(dir) / "config.json";
    }
    return "/root/.docker/config.json";
}

void CredentialStore::reloadIfChanged() {
    FileVersion now;
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0) {
        now = {true, st.st_dev, st.st_ino, static_cast<uint64_t>(st.st_size),
               st.st_mtim.tv_sec * 1'000'000'000 + st.st_mtim.tv_nsec, st.st_ctim.tv_sec * 1'000'000'000 + st.st_ctim.tv_nsec};
    } else if (errno != ENOENT) {
        rafs::failErrno("docker config " + path_.string());
    }
    if (loaded_ && now == version_) return;
    nlohmann::json config = nlohmann::json::object();
    if (now.exists) {
        if (now.size > kMaxConfigBytes) rafs::fail("{}: larger than {} bytes", path_.string(), kMaxConfigBytes);
        std::ifstream in(path_);
        std::stringstream text;
        text << in.rdbuf();
        if (!in) rafs::fail("cannot read {}", path_.string());
        config = nlohmann::json::parse(text.str(), nullptr, false);
        // The text is not quoted: it holds secrets.
        if (!config.is_object()) rafs::fail("{}: not a JSON object", path_.string());
    }
    config_ = std::move(config);
    version_ = now;
    loaded_ = true;
    from_helpers_.clear();
}

std::optional<Credentials> CredentialStore::lookup(const std::string& host) {
    std::lock_guard lock(mutex_);
    reloadIfChanged();
    auto helperFor = [&]() -> std::string {
        if (auto helpers = config_.find("credHelpers"); helpers != config_.end() && helpers->is_object()) {
            if (auto it = helpers->find(host); it != helpers->end() && it->is_string()) return it->get<std::string>();
        }
        if (auto store = config_.find("credsStore"); store != config_.end() && store->is_string()) {
            return store->get<std::string>();
        }
        return {};
    };
    if (const std::string helper = helperFor(); !helper.empty()) {
        auto cached = from_helpers_.find(host);
        if (cached == from_helpers_.end()) cached = from_helpers_.emplace(host, runCredentialHelper(helper, host)).first;
        if (cached->second) return cached->second;
    }
    if (auto auths = config_.find("auths"); auths != config_.end() && auths->is_object()) {
        if (auto it = auths->find(host); it != auths->end()) return fromAuthEntry(*it, path_, host);
        for (const auto& [key, entry] : auths->items()) {
            if (hostOfKey(key) == host) return fromAuthEntry(entry, path_, key);
        }
    }
    return std::nullopt;
}

void CredentialStore::forget(const std::string& host) {
    std::lock_guard lock(mutex_);
    from_helpers_.erase(host);
}

}  // namespace registry
