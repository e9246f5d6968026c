#include "format/Error.h"
#include "daemon/api/Config.h"

#include <catch2/catch.hpp>
#include <toml++/toml.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

using rafsd::Config;
using rafsd::parse;

namespace {

// The compiler ran in the build root, so a relative __FILE__ is relative to it; the test binary
// is <build root>/tests/unit/unit-tests. Works from any working directory.
std::filesystem::path sourceRoot() {
    std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe");
    std::filesystem::path file = self.parent_path().parent_path().parent_path() / __FILE__;
    return std::filesystem::weakly_canonical(file).parent_path().parent_path().parent_path();
}

Config parsed(const std::string& text) { return parse(text, "config.toml"); }

}  // namespace

TEST_CASE("config defaults", "[config]") {
    Config config = rafsd::defaults();
    CHECK(config.daemon.engine == rafsd::EngineKind::Auto);
    CHECK(config.daemon.state_dir == "/var/lib/rafsd");
    CHECK(config.daemon.cache_dir == "/var/cache/rafsd");
    CHECK(config.daemon.socket == "/run/rafsd/api.sock");
    CHECK(config.daemon.log_level == Config::LogLevel::Info);
    CHECK(config.fetch.amplify == 1 << 20);
    CHECK(config.fetch.max_inflight == 8);
    CHECK(config.fetch.retries == 1);
    CHECK(config.fetch.workers == 0);
    CHECK(config.prefetch.enable);
    CHECK(config.prefetch.bandwidth == 0);
    CHECK(config.backend.type == Config::BackendType::Localfs);
    CHECK(config.backend.localfs.dir == "/var/lib/rafsd/blobs");
    CHECK(config.backend.http.url == "http://127.0.0.1:8080/blobs");
    CHECK(config.backend.transport.timeout == 30);

    CHECK(parsed("") == config);
    CHECK(parsed("[daemon]\n[fetch]\n[prefetch]\n[backend]\n[backend.localfs]\n[backend.http]\n") == config);
}

TEST_CASE("config example file documents every key with its default", "[config]") {
    std::filesystem::path example = sourceRoot() / "daemon/api/config.example.toml";
    CHECK(rafsd::load(example) == rafsd::defaults());

    // Every key is in the example, not only accepted by it.
    toml::table table = toml::parse_file(example.string());
    for (const char* key : {"daemon.engine", "daemon.state_dir", "daemon.cache_dir", "daemon.socket",
                            "daemon.log_level", "daemon.busy_poll_us", "fetch.amplify", "fetch.max_inflight", "fetch.retries",
                            "fetch.workers", "prefetch.enable", "prefetch.bandwidth", "cache.max_size",
                            "cache.high_watermark", "cache.low_watermark", "cache.keep_recent", "cache.gc_interval",
                            "backend.type",
                            "backend.localfs.dir", "backend.http.url", "backend.registry.host", "backend.registry.repo",
                            "backend.transport.connect_timeout", "backend.transport.timeout",
                            "backend.transport.low_speed_limit", "backend.transport.low_speed_time",
                            "backend.transport.retries", "backend.transport.backoff_base_ms",
                            "backend.transport.backoff_max_ms", "backend.transport.retry_after_max",
                            "backend.transport.proxy", "backend.transport.proxy_skip",
                            "backend.transport.mirror_skip", "backend.transport.certs_dir"}) {
        INFO(key);
        CHECK(table.at_path(key).node() != nullptr);
    }
}

TEST_CASE("config values", "[config]") {
    Config config = parsed(R"(
[daemon]
engine = "fanotify"
state_dir = "/srv/state"
cache_dir = "/srv/cache"
socket = "/tmp/rafsd.sock"
log_level = "debug"
busy_poll_us = 0
[fetch]
amplify = 4096
max_inflight = 256
retries = 0
workers = 0
[prefetch]
enable = false
bandwidth = "20MiB"
[backend]
type = "http"
localfs.dir = "/blobs"
[backend.http]
url = "https://example.com/v1/blobs//"
[backend.transport]
timeout = 3600
)");
    CHECK(config.daemon.engine == rafsd::EngineKind::Fanotify);
    CHECK(config.daemon.state_dir == "/srv/state");
    CHECK(config.daemon.cache_dir == "/srv/cache");
    CHECK(config.daemon.socket == "/tmp/rafsd.sock");
    CHECK(config.daemon.log_level == Config::LogLevel::Debug);
    CHECK(config.daemon.busy_poll_us == 0);
    CHECK(config.fetch.amplify == 4096);
    CHECK(config.fetch.max_inflight == 256);
    CHECK(config.fetch.retries == 0);
    CHECK(config.fetch.workers == 0);
    CHECK(!config.prefetch.enable);
    CHECK(config.prefetch.bandwidth == 20u << 20);
    CHECK(config.backend.type == Config::BackendType::Http);
    CHECK(config.backend.localfs.dir == "/blobs");
    CHECK(config.backend.http.url == "https://example.com/v1/blobs");
    CHECK(config.backend.transport.timeout == 3600);

    // Dotted keys at the top level are the same keys.
    CHECK(parsed("fetch.retries = 3\ndaemon.engine = \"fscache\"\n").fetch.retries == 3);
    CHECK(parsed("backend.type = \"registry\"\nbackend.registry.host = \"r:5000\"\nbackend.registry.repo = \"a/b\"")
              .backend.type == Config::BackendType::Registry);

    const Config cache = parsed("[cache]\nmax_size = \"20GiB\"\nhigh_watermark = 90\nlow_watermark = 90\n"
                                "keep_recent = 0\ngc_interval = 60\n");
    CHECK(cache.cache.max_size == uint64_t{20} << 30);
    CHECK(cache.cache.high_watermark == 90);
    CHECK(cache.cache.low_watermark == 90);
    CHECK(cache.cache.keep_recent == 0);
    CHECK(cache.cache.gc_interval == 60);
    // A high mark below the default low mark, the low mark not given: collection frees down to the
    // high mark, not to a low mark above it.
    const Config high_only = parsed("[cache]\nmax_size = \"1GiB\"\nhigh_watermark = 50\n");
    CHECK(high_only.cache.low_watermark == 50);
    CHECK(parsed("[cache]\nhigh_watermark = 90\n").cache.low_watermark == 80);
}

TEST_CASE("config sizes", "[config]") {
    auto amplify = [](const std::string& value) { return parsed("fetch.amplify = " + value).fetch.amplify; };
    auto bandwidth = [](const std::string& value) { return parsed("prefetch.bandwidth = " + value).prefetch.bandwidth; };
    CHECK(amplify("0") == 0);
    CHECK(amplify("\"0\"") == 0);
    CHECK(amplify("\"4096\"") == 4096);
    CHECK(amplify("\"64KiB\"") == 64u << 10);
    CHECK(amplify("\"64MiB\"") == 64u << 20);
    CHECK(amplify("67108864") == 64u << 20);
    CHECK(bandwidth("\"3GiB\"") == 3ull << 30);
    CHECK(bandwidth("\"17179869183GiB\"") == 17179869183ull << 30);

    const std::string amplifyAccepts = "is not a size up to 64MiB (bytes, or a string such as '64KiB', '1MiB')";
    CHECK_THROWS_WITH(amplify("\"65MiB\""), "config.toml:1: fetch.amplify: '65MiB' " + amplifyAccepts);
    CHECK_THROWS_WITH(amplify("67108865"), "config.toml:1: fetch.amplify: 67108865 " + amplifyAccepts);
    const std::string sizeAccepts = "is not a size (bytes, or a string such as '64KiB', '1MiB', '2GiB')";
    for (std::string bad : {"\"1MB\"", "\"1.5MiB\"", "\"MiB\"", "\"\"", "\" 1MiB\"", "\"1KiBMiB\"", "\"-1\"",
                            "-1", "1.5", "true", "[1]", "\"17179869184GiB\""}) {
        INFO(bad);
        CHECK_THROWS_WITH(bandwidth(bad), Catch::Matchers::StartsWith("config.toml:1: prefetch.bandwidth: ") &&
                                              Catch::Matchers::EndsWith(sizeAccepts));
    }
    CHECK_THROWS_WITH(bandwidth("1.5"), "config.toml:1: prefetch.bandwidth: 1.5 " + sizeAccepts);
    CHECK_THROWS_WITH(bandwidth("[1]"), "config.toml:1: prefetch.bandwidth: an array " + sizeAccepts);
}

TEST_CASE("config unknown keys and tables", "[config]") {
    CHECK_THROWS_WITH(parsed("[fetch]\nretries = 2\n\namplfy = \"1MiB\"\n"),
                      "config.toml:4: unknown key 'fetch.amplfy'");
    CHECK_THROWS_WITH(parsed("[daemon]\n[fetc]\nretries = 2\n"), "config.toml:2: unknown table 'fetc'");
    CHECK_THROWS_WITH(parsed("verbose = true\n"), "config.toml:1: unknown key 'verbose'");
    CHECK_THROWS_WITH(parsed("[backend]\ntype = \"localfs\"\n[backend.s3]\nbucket = \"b\"\n"),
                      "config.toml:3: unknown table 'backend.s3'");
    CHECK_THROWS_WITH(parsed("[backend.http]\nurl = \"http://x\"\nproxy = \"http://p\"\n"),
                      "config.toml:3: unknown key 'backend.http.proxy'");
    // The first in the file, not the first by name.
    CHECK_THROWS_WITH(parsed("[daemon]\nzeta = 1\nalpha = 2\n"), "config.toml:2: unknown key 'daemon.zeta'");
}

TEST_CASE("config wrong types and values", "[config]") {
    CHECK_THROWS_WITH(parsed("[daemon]\nengine = \"fuse\"\n"),
                      "config.toml:2: daemon.engine: 'fuse' is not one of auto, fanotify, fscache");
    CHECK_THROWS_WITH(parsed("daemon.engine = 5"), "config.toml:1: daemon.engine: 5 is not one of auto, fanotify, fscache");
    CHECK_THROWS_WITH(parsed("daemon.log_level = \"trace\""),
                      "config.toml:1: daemon.log_level: 'trace' is not one of error, warn, info, debug");
    CHECK_THROWS_WITH(parsed("backend.type = \"s3\""),
                      "config.toml:1: backend.type: 's3' is not one of localfs, http, registry");
    CHECK_THROWS_WITH(parsed("daemon = 5"), "config.toml:1: daemon: 5 is not a table");
    CHECK_THROWS_WITH(parsed("[backend]\nlocalfs = \"/x\""), "config.toml:2: backend.localfs: '/x' is not a table");
    CHECK_THROWS_WITH(parsed("\n[daemon]\nstate_dir = \"var/lib/rafsd\"\n"),
                      "config.toml:3: daemon.state_dir: 'var/lib/rafsd' is not an absolute path");
    CHECK_THROWS_WITH(parsed("daemon.socket = \"\""), "config.toml:1: daemon.socket: '' is not an absolute path");
    CHECK_THROWS_WITH(parsed("daemon.cache_dir = \"/a\\u0000b\""),
                      "config.toml:1: daemon.cache_dir: '/a\\x00b' is not an absolute path");
    CHECK_THROWS_WITH(parsed("backend.localfs.dir = 1979-05-27"),
                      "config.toml:1: backend.localfs.dir: a date or time is not an absolute path");
    CHECK_THROWS_WITH(parsed("fetch.max_inflight = 0"),
                      "config.toml:1: fetch.max_inflight: 0 is not an integer from 1 to 256");
    CHECK_THROWS_WITH(parsed("fetch.max_inflight = \"8\""),
                      "config.toml:1: fetch.max_inflight: '8' is not an integer from 1 to 256");
    CHECK_THROWS_WITH(parsed("daemon.busy_poll_us = 10001"),
                      "config.toml:1: daemon.busy_poll_us: 10001 is not an integer from 0 to 10000");
    CHECK_THROWS_WITH(parsed("fetch.retries = 9"), "config.toml:1: fetch.retries: 9 is not an integer from 0 to 8");
    CHECK_THROWS_WITH(parsed("fetch.workers = -1"), "config.toml:1: fetch.workers: -1 is not an integer from 0 to 256");
    CHECK_THROWS_WITH(parsed("fetch.workers = 2.0"), "config.toml:1: fetch.workers: 2.0 is not an integer from 0 to 256");
    CHECK_THROWS_WITH(parsed("backend.transport.timeout = 0"),
                      "config.toml:1: backend.transport.timeout: 0 is not an integer from 1 to 3600");
    CHECK_THROWS_WITH(parsed("cache.high_watermark = 0"),
                      "config.toml:1: cache.high_watermark: 0 is not an integer from 1 to 100");
    CHECK_THROWS_WITH(parsed("[cache]\nhigh_watermark = 50\nlow_watermark = 60"),
                      "config.toml:3: cache.low_watermark: 60 is not at most high_watermark (50)");
    CHECK_THROWS_WITH(parsed("cache.gc_interval = 0"),
                      "config.toml:1: cache.gc_interval: 0 is not an integer from 1 to 86400");
    CHECK_THROWS_WITH(parsed("metrics.address = \"127.example.invalid:9911\""),
                      Catch::Matchers::Contains("is not a loopback address"));
    CHECK(parsed("metrics.address = \"127.0.0.2:9911\"").metrics.address == "127.0.0.2:9911");
    CHECK(parsed("metrics.address = \"[::1]:9911\"").metrics.address == "[::1]:9911");
    CHECK_THROWS_WITH(parsed("metrics.address = \"http://127.0.0.1:9911\""),
                      Catch::Matchers::EndsWith("(HOST:PORT has no scheme)"));
    CHECK_THROWS_WITH(parsed("metrics.address = \"127.0.0.1:99999\""),
                      Catch::Matchers::EndsWith("(a PORT from 1 to 65535)"));
    CHECK_THROWS_WITH(parsed("metrics.address = \"::1:9911\""),
                      Catch::Matchers::EndsWith("(an IPv6 HOST in brackets: [::1]:9100)"));
    CHECK_THROWS_WITH(parsed("prefetch.enable = \"yes\""), "config.toml:1: prefetch.enable: 'yes' is not true or false");
    CHECK_THROWS_WITH(parsed("prefetch.enable = 1"), "config.toml:1: prefetch.enable: 1 is not true or false");
    for (const char* url : {"ftp://host/x", "http://", "http:///x", "localhost:8080", "http://a b"}) {
        INFO(url);
        CHECK_THROWS_WITH(parsed(fmt::format("backend.http.url = \"{}\"", url)),
                          fmt::format("config.toml:1: backend.http.url: '{}' is not an http:// or https:// URL", url));
    }
    // A password in a URL is refused without being repeated; an '@' further on is a path's.
    CHECK_THROWS_WITH(parsed("backend.http.url = \"https://me:secret@host/blobs\""),
                      "config.toml:1: backend.http.url: a URL with user:password@ in it; credentials go in the docker "
                      "config");
    CHECK(parsed("backend.http.url = \"https://host/blobs/@x\"").backend.http.url == "https://host/blobs/@x");
    // Control characters are escaped: the message stays one line.
    CHECK_THROWS_WITH(parsed("daemon.engine = \"a\\nb\\u0001\""),
                      "config.toml:1: daemon.engine: 'a\\nb\\x01' is not one of auto, fanotify, fscache");
}

TEST_CASE("config syntax errors name file, line and column", "[config]") {
    CHECK_THROWS_WITH(parsed("[daemon]\nengine = auto\n"), Catch::Matchers::StartsWith("config.toml:2:10: "));
    CHECK_THROWS_WITH(parsed("[fetch]\nretries = 1\nretries = 2\n"), Catch::Matchers::StartsWith("config.toml:3:"));
    CHECK_THROWS_WITH(parsed("[daemon\n"), Catch::Matchers::StartsWith("config.toml:1:"));
    try {
        parsed("a = \"unterminated\n");
        FAIL("no error");
    } catch (const rafs::Error& e) {
        CHECK(std::string(e.what()).find('\n') == std::string::npos);
    }
}

TEST_CASE("config load names the file", "[config]") {
    char dir[] = "/tmp/rafsd-config-XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    std::filesystem::path path = std::filesystem::path(dir) / "config.toml";
    CHECK_THROWS_WITH(rafsd::load(path), fmt::format("cannot read {}: No such file or directory", path.string()));
    std::ofstream(path) << "[prefetch]\nenable = false\nbandwith = \"1MiB\"\n";
    CHECK_THROWS_WITH(rafsd::load(path), fmt::format("{}:3: unknown key 'prefetch.bandwith'", path.string()));
    std::ofstream(path) << "[prefetch]\nenable = false\n";
    CHECK(!rafsd::load(path).prefetch.enable);
    CHECK_THROWS_WITH(rafsd::load(dir), fmt::format("cannot read {}: Is a directory", dir));
    // Read no further than 1 MiB: a wrong path to a device or a huge log costs no memory.
    std::ofstream(path) << std::string((1 << 20) + 1, '#');
    CHECK_THROWS_WITH(rafsd::load(path), fmt::format("{}: larger than 1048576 bytes", path.string()));
    std::filesystem::remove_all(dir);
}
