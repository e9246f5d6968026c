#include "daemon/api/Config.h"

#include "registry/Url.h"
#include "format/Error.h"
#include "format/FileIo.h"

#include <fcntl.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <limits>
#include <vector>

namespace rafsd {
namespace {

template <typename E>
struct Named {
    std::string_view name;
    E value;
};

constexpr Named<Config::LogLevel> kLogLevels[] = {{"error", Config::LogLevel::Error},
                                                  {"warn", Config::LogLevel::Warn},
                                                  {"info", Config::LogLevel::Info},
                                                  {"debug", Config::LogLevel::Debug}};
constexpr Named<Config::BackendType> kBackendTypes[] = {{"localfs", Config::BackendType::Localfs},
                                                        {"http", Config::BackendType::Http},
                                                        {"registry", Config::BackendType::Registry}};

template <typename E, size_t N>
std::string joinNames(const Named<E> (&table)[N]) {
    std::string out;
    for (const auto& entry : table) out += out.empty() ? std::string(entry.name) : fmt::format(", {}", entry.name);
    return out;
}

std::string describe(const toml::node& node) {
    if (auto s = node.value_exact<std::string_view>()) return rafs::quote(*s);
    if (auto i = node.value_exact<int64_t>()) return std::to_string(*i);
    if (auto d = node.value_exact<double>()) {
        // "2.0", not "2": the value must not look like the integer it is not.
        std::string text = fmt::format("{}", *d);
        return text.find_first_not_of("-0123456789") == std::string::npos ? text + ".0" : text;
    }
    if (auto b = node.value_exact<bool>()) return *b ? "true" : "false";
    if (node.is_table()) return "a table";
    if (node.is_array()) return "an array";
    return "a date or time";
}

// One present key: its node, its dotted name and the file it came from, for messages.
struct Value {
    const toml::node* node;
    std::string key;
    const std::string* source;

    // Throws "<file>:<line>: <key>: <value> is not <accepted>".
    [[noreturn]] void reject(std::string_view accepted) const {
        rafs::fail("{}:{}: {}: {} is not {}", *source, node->source().begin.line, key, describe(*node), accepted);
    }
    std::string_view string(std::string_view accepted) const {
        auto s = node->value_exact<std::string_view>();
        if (!s) reject(accepted);
        return *s;
    }
};

// A table of the file (possibly absent) whose keys are read one by one; finish() then refuses any
// key nobody asked for, so the list of known keys is exactly the list of reads.
class Section {
public:
    Section(const std::string& source, const toml::table* table, std::string prefix)
        : source_(&source), table_(table), prefix_(std::move(prefix)) {}

    std::optional<Value> get(std::string_view key) {
        known_.push_back(key);
        if (table_ == nullptr) return std::nullopt;
        const toml::node* node = table_->get(key);
        if (node == nullptr) return std::nullopt;
        return Value{node, dotted(key), source_};
    }

    Section section(std::string_view key) {
        const toml::table* sub = nullptr;
        if (auto value = get(key)) {
            sub = value->node->as_table();
            if (sub == nullptr) value->reject("a table");
        }
        return Section(*source_, sub, dotted(key));
    }

    // Names the unknown key that comes first in the file (the table itself is ordered by name).
    void finish() const {
        if (table_ == nullptr) return;
        const toml::key* first = nullptr;
        const toml::node* firstNode = nullptr;
        for (auto&& [key, node] : *table_) {
            if (std::ranges::find(known_, key.str()) != known_.end()) continue;
            if (first == nullptr || key.source().begin < first->source().begin) {
                first = &key;
                firstNode = &node;
            }
        }
        if (first != nullptr) {
            rafs::fail("{}:{}: unknown {} '{}'", *source_, first->source().begin.line,
                       firstNode->is_table() ? "table" : "key", dotted(first->str()));
        }
    }

private:
    std::string dotted(std::string_view key) const {
        return prefix_.empty() ? std::string(key) : fmt::format("{}.{}", prefix_, key);
    }

    const std::string* source_;
    const toml::table* table_;
    std::string prefix_;
    std::vector<std::string_view> known_;
};

template <typename E, size_t N>
E choice(const Value& value, const Named<E> (&table)[N]) {
    std::string accepted = fmt::format("one of {}", joinNames(table));
    std::string_view text = value.string(accepted);
    for (const auto& entry : table) {
        if (entry.name == text) return entry.value;
    }
    value.reject(accepted);
}

std::filesystem::path absolutePath(const Value& value) {
    std::string_view text = value.string("an absolute path");
    if (!text.starts_with('/') || text.find('\0') != std::string_view::npos) value.reject("an absolute path");
    return std::filesystem::path(text);
}

uint32_t integer(const Value& value, uint32_t min, uint32_t max) {
    auto i = value.node->value_exact<int64_t>();
    if (!i || *i < min || *i > max) value.reject(fmt::format("an integer from {} to {}", min, max));
    return static_cast<uint32_t>(*i);
}

bool boolean(const Value& value) {
    auto b = value.node->value_exact<bool>();
    if (!b) value.reject("true or false");
    return *b;
}

// A byte count: an integer, or a string of digits with an optional KiB, MiB or GiB suffix.
uint64_t size(const Value& value, uint64_t max) {
    std::string accepted = "a size (bytes, or a string such as '64KiB', '1MiB', '2GiB')";
    if (max != std::numeric_limits<uint64_t>::max()) {
        accepted = fmt::format("a size up to {}MiB (bytes, or a string such as '64KiB', '1MiB')", max >> 20);
    }
    uint64_t bytes = 0;
    if (auto i = value.node->value_exact<int64_t>()) {
        if (*i < 0) value.reject(accepted);
        bytes = static_cast<uint64_t>(*i);
    } else {
        std::string_view text = value.string(accepted);
        unsigned shift = 0;
        for (auto [suffix, bits] : {std::pair{"KiB", 10u}, {"MiB", 20u}, {"GiB", 30u}}) {
            if (text.ends_with(suffix)) {
                text.remove_suffix(3);
                shift = bits;
                break;
            }
        }
        uint64_t number = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (text.empty() || ec != std::errc() || end != text.data() + text.size() || number > (max >> shift)) {
            value.reject(accepted);
        }
        bytes = number << shift;
    }
    if (bytes > max) value.reject(accepted);
    return bytes;
}

std::string httpUrl(const Value& value) {
    constexpr std::string_view accepted = "an http:// or https:// URL";
    std::string_view text = value.string(accepted);
    std::string_view rest = text;
    if (rest.starts_with("http://")) rest.remove_prefix(7);
    else if (rest.starts_with("https://")) rest.remove_prefix(8);
    else value.reject(accepted);
    // The host must be there and the whole URL printable: it is pasted into request lines.
    bool printable = std::ranges::all_of(text, [](char c) { return c > ' ' && c != '\x7f'; });
    if (rest.empty() || rest.starts_with('/') || !printable) value.reject(accepted);
    // No user:password@ in it: it would show in every message naming the URL (and not here).
    if (rest.substr(0, rest.find('/')).find('@') != std::string_view::npos) {
        rafs::fail("{}:{}: {}: a URL with user:password@ in it; credentials go in the docker config", *value.source,
                   value.node->source().begin.line, value.key);
    }
    // Blob URLs are <url>/<blob-id>; a trailing '/' would double it.
    while (text.ends_with('/')) text.remove_suffix(1);
    return std::string(text);
}

// host[:port] as in image references: a name or address, an optional port, nothing else.
bool validHost(std::string_view text) {
    return !text.empty() && std::ranges::all_of(text, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
               c == ':' || c == '[' || c == ']' || c == '_';
    });
}

// Empty: not set.
std::string hostName(const Value& value) {
    constexpr std::string_view accepted = "a host or host:port";
    std::string_view text = value.string(accepted);
    if (!text.empty() && !validHost(text)) value.reject(accepted);
    return std::string(text);
}

// A repository name: lower-case path components (distribution's grammar, loosely). Empty: not set.
std::string repositoryName(const Value& value) {
    constexpr std::string_view accepted = "a repository name such as 'library/debian'";
    std::string_view text = value.string(accepted);
    bool ok = text.empty() || (!text.starts_with('/') && !text.ends_with('/') && text.find("//") == std::string_view::npos &&
                               std::ranges::all_of(text, [](char c) {
                                   return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
                                          c == '_' || c == '/';
                               }));
    if (!ok) value.reject(accepted);
    return std::string(text);
}

std::vector<std::string> urlList(const Value& value) {
    constexpr std::string_view accepted = "an array of at most 16 http:// or https:// URLs";
    static_assert(kMaxMirrors == 16, "the message names the limit");
    const toml::array* array = value.node->as_array();
    if (array == nullptr || array->size() > kMaxMirrors) value.reject(accepted);
    std::vector<std::string> urls;
    for (const toml::node& item : *array) urls.push_back(httpUrl(Value{&item, value.key, value.source}));
    return urls;
}

Config::Host hostSettings(Section& section) {
    Config::Host host;
    if (auto v = section.get("ca_file")) host.ca_file = absolutePath(*v);
    if (auto v = section.get("client_cert")) host.client_cert = absolutePath(*v);
    if (auto v = section.get("client_key")) host.client_key = absolutePath(*v);
    if (auto v = section.get("plain_http")) host.plain_http = boolean(*v);
    if (auto v = section.get("mirrors")) host.mirrors = urlList(*v);
    if (auto v = section.get("mirrors_resolve_tags")) host.mirrors_resolve_tags = boolean(*v);
    section.finish();
    return host;
}

// "", "unix:/abs/path" or "HOST:PORT"; a TCP host other than loopback only with allow_remote, so a
// typo cannot publish the host's metrics to the network.
std::string metricsAddress(const Value& value, bool allow_remote) {
    constexpr std::string_view accepted = "\"\", \"unix:/absolute/path\" or \"HOST:PORT\"";
    const std::string_view text = value.string(accepted);
    if (text.empty()) return {};
    if (text.starts_with("unix:")) {
        if (text.size() < 6 || text[5] != '/' || text.find('\0') != std::string_view::npos) value.reject(accepted);
        return std::string(text);
    }
    if (text.find("://") != std::string_view::npos) value.reject(fmt::format("{} (HOST:PORT has no scheme)", accepted));
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) value.reject(accepted);
    std::string_view host = text.substr(0, colon);
    const std::string_view port = text.substr(colon + 1);
    unsigned number = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || number == 0 || number > 65535) {
        value.reject(fmt::format("{} (a PORT from 1 to 65535)", accepted));
    }
    if (host.starts_with('[') && host.ends_with(']')) {
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string_view::npos) {
        value.reject(fmt::format("{} (an IPv6 HOST in brackets: [::1]:9100)", accepted));
    }
    if (!registry::isLoopbackHost(host) && !allow_remote) {
        value.reject("a loopback address (127.x.x.x, [::1], localhost), or set allow_remote = true");
    }
    return std::string(text);
}

Config fromTable(const toml::table& root, const std::string& source) {
    Config config;
    Section top(source, &root, "");

    Section daemon = top.section("daemon");
    if (auto v = daemon.get("engine")) {
        const std::string accepted = fmt::format("one of {}", kEngineNames);
        const auto engine = parseEngineKind(v->string(accepted));
        if (!engine) v->reject(accepted);
        config.daemon.engine = *engine;
    }
    if (auto v = daemon.get("state_dir")) config.daemon.state_dir = absolutePath(*v);
    if (auto v = daemon.get("cache_dir")) config.daemon.cache_dir = absolutePath(*v);
    if (auto v = daemon.get("socket")) config.daemon.socket = absolutePath(*v);
    if (auto v = daemon.get("log_level")) config.daemon.log_level = choice(*v, kLogLevels);
    if (auto v = daemon.get("busy_poll_us")) config.daemon.busy_poll_us = integer(*v, 0, kMaxBusyPollUs);
    daemon.finish();

    Section fetch = top.section("fetch");
    if (auto v = fetch.get("amplify")) config.fetch.amplify = size(*v, kMaxAmplify);
    if (auto v = fetch.get("max_inflight")) config.fetch.max_inflight = integer(*v, 1, kMaxInflight);
    if (auto v = fetch.get("retries")) config.fetch.retries = integer(*v, 0, kMaxRetries);
    if (auto v = fetch.get("workers")) config.fetch.workers = integer(*v, 0, kMaxWorkers);
    fetch.finish();

    Section prefetch = top.section("prefetch");
    if (auto v = prefetch.get("enable")) config.prefetch.enable = boolean(*v);
    if (auto v = prefetch.get("bandwidth")) config.prefetch.bandwidth = size(*v, std::numeric_limits<uint64_t>::max());
    prefetch.finish();

    Section cache = top.section("cache");
    if (auto v = cache.get("max_size")) config.cache.max_size = size(*v, std::numeric_limits<uint64_t>::max());
    if (auto v = cache.get("high_watermark")) config.cache.high_watermark = integer(*v, 1, 100);
    if (auto v = cache.get("low_watermark")) {
        config.cache.low_watermark = integer(*v, 1, 100);
        if (config.cache.low_watermark > config.cache.high_watermark) {
            v->reject(fmt::format("at most high_watermark ({})", config.cache.high_watermark));
        }
    } else {
        // The default low mark above a lower high mark would free nothing until the cache is past it.
        config.cache.low_watermark = std::min(config.cache.low_watermark, config.cache.high_watermark);
    }
    if (auto v = cache.get("keep_recent")) config.cache.keep_recent = integer(*v, 0, kMaxCacheSeconds);
    if (auto v = cache.get("gc_interval")) config.cache.gc_interval = integer(*v, 1, kMaxCacheSeconds);
    cache.finish();

    Section backend = top.section("backend");
    uint32_t type_line = 0;
    if (auto v = backend.get("type")) {
        config.backend.type = choice(*v, kBackendTypes);
        type_line = v->node->source().begin.line;
    }
    Section localfs = backend.section("localfs");
    if (auto v = localfs.get("dir")) config.backend.localfs.dir = absolutePath(*v);
    localfs.finish();
    Section http = backend.section("http");
    if (auto v = http.get("url")) config.backend.http.url = httpUrl(*v);
    http.finish();
    Section registry = backend.section("registry");
    if (auto v = registry.get("host")) config.backend.registry.host = hostName(*v);
    if (auto v = registry.get("repo")) config.backend.registry.repo = repositoryName(*v);
    if (auto v = registry.get("docker_config")) config.backend.registry.docker_config = absolutePath(*v);
    registry.finish();
    Section transport = backend.section("transport");
    Config::Transport& t = config.backend.transport;
    if (auto v = transport.get("connect_timeout")) t.connect_timeout = integer(*v, 1, kMaxHttpTimeout);
    if (auto v = transport.get("timeout")) t.timeout = integer(*v, 1, kMaxHttpTimeout);
    if (auto v = transport.get("low_speed_limit")) t.low_speed_limit = size(*v, 1u << 30);
    if (auto v = transport.get("low_speed_time")) t.low_speed_time = integer(*v, 0, kMaxHttpTimeout);
    if (auto v = transport.get("retries")) t.retries = integer(*v, 0, kMaxNetworkRetries);
    if (auto v = transport.get("backoff_base_ms")) t.backoff_base_ms = integer(*v, 1, kMaxBackoffMs);
    if (auto v = transport.get("backoff_max_ms")) t.backoff_max_ms = integer(*v, 1, kMaxBackoffMs);
    if (auto v = transport.get("retry_after_max")) t.retry_after_max = integer(*v, 0, kMaxHttpTimeout);
    if (auto v = transport.get("proxy")) {
        // "" turns a proxy off explicitly.
        t.proxy = v->string("an http:// URL or \"\"").empty() ? "" : httpUrl(*v);
    }
    if (auto v = transport.get("proxy_skip")) t.proxy_skip = integer(*v, 1, kMaxHttpTimeout);
    if (auto v = transport.get("mirror_skip")) t.mirror_skip = integer(*v, 1, kMaxHttpTimeout);
    if (auto v = transport.get("certs_dir")) t.certs_dir = absolutePath(*v);
    transport.finish();
    if (auto hosts = backend.get("hosts")) {
        const toml::table* table = hosts->node->as_table();
        if (table == nullptr) hosts->reject("a table of hosts");
        for (auto&& [key, node] : *table) {
            const std::string name(key.str());
            if (!validHost(name)) {
                rafs::fail("{}:{}: {}: {} is not a host or host:port", source, key.source().begin.line, hosts->key,
                           rafs::quote(name));
            }
            Value host{&node, fmt::format("{}.\"{}\"", hosts->key, name), hosts->source};
            if (!node.is_table()) host.reject("a table");
            Section section(source, node.as_table(), host.key);
            Config::Host settings = hostSettings(section);
            if (settings.client_cert.empty() != settings.client_key.empty()) {
                rafs::fail("{}:{}: {}: client_cert and client_key go together", source, node.source().begin.line, host.key);
            }
            config.backend.hosts[name] = std::move(settings);
        }
    }
    backend.finish();
    if (config.backend.type == Config::BackendType::Registry &&
        (config.backend.registry.host.empty() || config.backend.registry.repo.empty())) {
        rafs::fail("{}:{}: backend.type 'registry' needs backend.registry.host and backend.registry.repo", source,
                   type_line);
    }

    Section trace = top.section("trace");
    if (auto v = trace.get("cached_blobs_for")) config.trace.cached_blobs_for = integer(*v, 0, kMaxCacheSeconds);
    trace.finish();

    Section metrics = top.section("metrics");
    if (auto v = metrics.get("allow_remote")) config.metrics.allow_remote = boolean(*v);
    if (auto v = metrics.get("address")) config.metrics.address = metricsAddress(*v, config.metrics.allow_remote);
    metrics.finish();

    top.finish();
    return config;
}

// Config files are small; the cap keeps a wrong path (a device, a huge log) from eating memory.
constexpr size_t kMaxConfigBytes = 1 << 20;

}  // namespace

Config defaults() { return Config{}; }

Config parse(std::string_view text, const std::string& source) {
    toml::table root;
    try {
        root = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        rafs::fail("{}:{}:{}: {}", source, e.source().begin.line, e.source().begin.column, e.description());
    }
    return fromTable(root, source);
}

Config load(const std::filesystem::path& path) { return parse(rafs::readFile(path.string(), kMaxConfigBytes), path.string()); }

Config loadIfPresent(const std::filesystem::path& path, bool explicit_path) {
    if (explicit_path || std::filesystem::exists(path)) return load(path);
    return defaults();
}

log::Level logLevel(Config::LogLevel level) {
    switch (level) {
    case Config::LogLevel::Error: return log::Level::Error;
    case Config::LogLevel::Warn: return log::Level::Warn;
    case Config::LogLevel::Info: return log::Level::Info;
    case Config::LogLevel::Debug: return log::Level::Debug;
    }
    return log::Level::Info;
}

}  // namespace rafsd
