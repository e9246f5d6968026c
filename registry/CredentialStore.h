// Registry credentials from a Docker config.json: `credHelpers[host]`, then `credsStore` (both run
// as `docker-credential-<name> get`, the host on stdin, JSON on stdout), then `auths` (keys
// host[:port], also with a scheme or path, which are ignored). The file is read again whenever it
// changes, so renewed credentials are used without a restart. Secrets never go into messages.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace registry {

struct Credentials {
    std::string username;
    std::string secret;
    bool operator==(const Credentials&) const = default;
};

class CredentialStore {
public:
    // `path` empty: defaultPath().
    explicit CredentialStore(std::filesystem::path path);

    // $DOCKER_CONFIG/config.json, else /root/.docker/config.json.
    static std::filesystem::path defaultPath();

    // nullopt: none for this host (anonymous access). Throws rafs::Error naming the file or the
    // helper when they cannot be used.
    std::optional<Credentials> lookup(const std::string& host);
    // After a server refused them: the next lookup asks the helper again.
    void forget(const std::string& host);

    const std::filesystem::path& path() const { return path_; }
    // For a message saying there are no credentials: the path, and "(no such file)" when it is
    // not there (a mistyped docker_config or --authfile).
    std::string describe() const;

private:
    void reloadIfChanged();

    struct FileVersion {
        bool exists = false;
        uint64_t device = 0, inode = 0, size = 0;
        int64_t mtime_ns = 0, ctime_ns = 0;
        bool operator==(const FileVersion&) const = default;
    };

    std::filesystem::path path_;
    std::mutex mutex_;
    FileVersion version_;
    bool loaded_ = false;
    nlohmann::json config_;
    std::map<std::string, std::optional<Credentials>> from_helpers_;  // since the last change
};

// Runs `docker-credential-<helper> get` for `host`; nullopt if it has no credentials for it.
std::optional<Credentials> runCredentialHelper(const std::string& helper, const std::string& host);

}  // namespace registry
