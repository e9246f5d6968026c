// rafsd's configuration file (/etc/rafsd/config.toml): every key has a default, and a file that
// names an unknown key or a value out of range is refused with the file and line, so a typo never
// silently falls back to a default. config.example.toml documents every key.
#pragma once

#include "daemon/api/EngineKind.h"
#include "daemon/core/Log.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rafsd {

struct Config {
    enum class LogLevel { Error, Warn, Info, Debug };
    enum class BackendType { Localfs, Http, Registry };

    struct Daemon {
        EngineKind engine = EngineKind::Auto;
        std::filesystem::path state_dir = "/var/lib/rafsd";
        std::filesystem::path cache_dir = "/var/cache/rafsd";
        std::filesystem::path socket = "/run/rafsd/api.sock";
        LogLevel log_level = LogLevel::Info;
        uint32_t busy_poll_us = 50;  // fanotify: how long to poll for the next event before sleeping
        bool operator==(const Daemon&) const = default;
    };
    struct Fetch {
        uint64_t amplify = 1 << 20;  // bytes
        uint32_t max_inflight = 8;
        uint32_t retries = 1;
        uint32_t workers = 0;  // chunks decompressed and verified at once; 0 = one per CPU
        bool operator==(const Fetch&) const = default;
    };
    struct Prefetch {
        bool enable = true;
        uint64_t bandwidth = 0;  // bytes per second, 0 = unlimited
        bool operator==(const Prefetch&) const = default;
    };
    // The cache dir's size (CacheCollector.h).
    struct Cache {
        uint64_t max_size = 0;        // bytes; 0 = unbounded (only `rafsctl gc` removes unused caches)
        uint32_t high_watermark = 95; // percent of max_size at which collection starts ...
        uint32_t low_watermark = 80;  // ... and the percent it frees down to
        uint32_t keep_recent = 10;    // seconds: data read or written this recently is never freed
        uint32_t gc_interval = 5;     // seconds between checks of the size
        bool operator==(const Cache&) const = default;
    };
    struct Localfs {
        std::filesystem::path dir = "/var/lib/rafsd/blobs";
        bool operator==(const Localfs&) const = default;
    };
    struct Http {
        std::string url = "http://127.0.0.1:8080/blobs";  // no trailing '/'; blobs at <url>/<blob-id>
        bool operator==(const Http&) const = default;
    };
    struct Registry {
        std::string host;                     // host[:port]; required for type "registry"
        std::string repo;                     // e.g. "library/debian"; required for type "registry"
        std::filesystem::path docker_config;  // empty: $DOCKER_CONFIG/config.json, else /root/.docker/config.json
        bool operator==(const Registry&) const = default;
    };
    // The network side of the http and registry backends.
    struct Transport {
        uint32_t connect_timeout = 10;   // seconds
        uint32_t timeout = 30;           // seconds, one request
        uint64_t low_speed_limit = 1024; // bytes per second ...
        uint32_t low_speed_time = 10;    // ... for this many seconds aborts a request
        uint32_t retries = 4;
        uint32_t backoff_base_ms = 100;
        uint32_t backoff_max_ms = 5000;
        uint32_t retry_after_max = 30;   // seconds
        std::string proxy;               // http:// URL; empty: none
        uint32_t proxy_skip = 30;        // seconds direct after the proxy failed
        uint32_t mirror_skip = 30;       // seconds a failing mirror is skipped
        std::filesystem::path certs_dir = "/etc/docker/certs.d";
        bool operator==(const Transport&) const = default;
    };
    // [backend.hosts."host:port"]: settings of one server, by its host[:port].
    struct Host {
        std::filesystem::path ca_file;
        std::filesystem::path client_cert;
        std::filesystem::path client_key;
        bool plain_http = false;           // registry: http:// instead of https://
        std::vector<std::string> mirrors;  // registry: base URLs tried before the host, in order
        bool mirrors_resolve_tags = false;  // registry: a mirror may say which manifest a tag names
        bool operator==(const Host&) const = default;
    };
    struct Backend {
        BackendType type = BackendType::Localfs;
        Localfs localfs;
        Http http;
        Registry registry;
        Transport transport;
        std::map<std::string, Host> hosts;
        bool operator==(const Backend&) const = default;
    };

    struct Trace {
        // Seconds after a fanotify mount during which blobs complete in the cache stay marked, so
        // that the image's start trace includes their reads (each then costs a round trip to
        // rafsd); 0 = off: their reads never reach rafsd, and the trace says it left them out.
        uint32_t cached_blobs_for = 0;
        bool operator==(const Trace&) const = default;
    };

    struct Metrics {
        // Where GET /metrics answers: "" (off), "unix:/abs/path" or "HOST:PORT" (TCP; HOST an IP
        // literal, [IPv6] or localhost). TCP must be loopback unless allow_remote.
        std::string address;
        bool allow_remote = false;
        bool operator==(const Metrics&) const = default;
    };

    Daemon daemon;
    Fetch fetch;
    Prefetch prefetch;
    Cache cache;
    Trace trace;
    Backend backend;
    Metrics metrics;
    bool operator==(const Config&) const = default;
};

// Largest accepted values, so a typo cannot ask for absurd memory or thread counts.
inline constexpr uint64_t kMaxAmplify = 64u << 20;
inline constexpr uint32_t kMaxInflight = 256;
inline constexpr uint32_t kMaxRetries = 8;
inline constexpr uint32_t kMaxWorkers = 256;
inline constexpr uint32_t kMaxBusyPollUs = 10'000;
inline constexpr uint32_t kMaxHttpTimeout = 3600;
inline constexpr uint32_t kMaxNetworkRetries = 20;
inline constexpr uint32_t kMaxBackoffMs = 600'000;
inline constexpr size_t kMaxMirrors = 16;
inline constexpr uint32_t kMaxCacheSeconds = 86'400;

Config defaults();

// Reads and validates a config file; throws rafs::Error "<path>:<line>: <what is wrong>".
Config load(const std::filesystem::path& path);

inline constexpr const char* kDefaultConfigPath = "/etc/rafsd/config.toml";
// load(path) when the user named the file (`explicit_path`) or it exists, else defaults(): rafsd
// and rafs-snapshotter run without a config file.
Config loadIfPresent(const std::filesystem::path& path, bool explicit_path);

// As load(), for text already in memory; `source` names it in messages.
Config parse(std::string_view text, const std::string& source);

// daemon.log_level as the log's level.
log::Level logLevel(Config::LogLevel level);

}  // namespace rafsd
