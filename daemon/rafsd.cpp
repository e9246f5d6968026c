// rafsd: serves RAFS v6 images to the kernel on demand. `mount` serves one image in the
// foreground; `serve` is the long-running service driven through the control socket (rafsctl).
#include "builder/format/Error.h"
#include "daemon/api/Config.h"
#include "daemon/api/ControlServer.h"
#include "daemon/api/ImageService.h"
#include "daemon/core/Log.h"
#include "daemon/engines/fscache/FscacheSupervisor.h"

#include <CLI/CLI.hpp>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>

namespace fs = std::filesystem;
using namespace rafsd;

namespace {

constexpr const char* kDefaultConfig = "/etc/rafsd/config.toml";

Config loadConfig(const std::string& path, bool explicit_path) {
    if (explicit_path || fs::exists(path)) return load(path);
    return defaults();
}

log::Level levelOf(Config::LogLevel level) {
    switch (level) {
    case Config::LogLevel::Error: return log::Level::Error;
    case Config::LogLevel::Warn: return log::Level::Warn;
    case Config::LogLevel::Info: return log::Level::Info;
    case Config::LogLevel::Debug: return log::Level::Debug;
    }
    return log::Level::Info;
}

// Blocks SIGINT and SIGTERM in every thread (call before starting any), then waits for one.
sigset_t blockStopSignals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) rafs::fail("cannot block signals");
    return set;
}

int waitForStopSignal(const sigset_t& set) {
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    return sig;
}

// `rafsd mount` with the fscache engine: the worker body that superviseFscache() forks.
int fscacheWorker(const Config& config, const MountRequest& request, std::chrono::milliseconds fetch_delay,
                  const sigset_t& stop_signals, FscacheDevice device, bool restored,
                  const std::function<void()>& ready) {
    ImageService service(config);
    service.setFetchDelay(fetch_delay);
    service.useFscacheDevice(std::move(device), restored);
    // After a failover the kernel keeps the image mounted: take it over instead of mounting again.
    // Its cookies must be known before `restore` makes the kernel resend the OPENs.
    if (restored && ImageService::hasErofsMount(request.mountpoint)) {
        service.reattach(request);
        service.startFscache();
    } else {
        service.startFscache();
        service.mount(request);
    }
    ready();
    const int sig = waitForStopSignal(stop_signals);
    log::info("{}: unmounting", sig == SIGINT ? "SIGINT" : "SIGTERM");
    service.shutdown();
    return 0;
}

// The listening control socket systemd passed (socket activation), or -1. Looked up before the
// supervisor forks: LISTEN_PID names the supervisor, so the worker would not see it.
int activatedControlSocket() {
    const int count = sd_listen_fds(0);
    if (count < 0) rafs::failErrno("sd_listen_fds", -count);
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + count; ++fd) {
        const int is_unix = sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0);
        if (is_unix < 0) rafs::failErrno(fmt::format("fd {} from systemd", fd), -is_unix);
        if (is_unix > 0) return fd;
    }
    return -1;
}

// `rafsd serve` with the fscache engine: the worker body that superviseFscache() forks. The table
// of fscache mounts in the state dir tells a worker that takes over a device (after a worker died,
// or rafsd was restarted with the fd from systemd's store) which mounts to reattach.
int serveWorker(const Config& config, std::chrono::milliseconds fetch_delay, const sigset_t& stop_signals,
                int control_socket, FscacheDevice device, bool restored, const std::function<void()>& ready) {
    ImageService service(config);
    service.setFetchDelay(fetch_delay);
    service.keepFscacheTable(config.daemon.state_dir / "fscache-mounts.json");
    service.useFscacheDevice(std::move(device), restored);
    // Before start: the cookies must be known before `restore` makes the kernel resend the OPENs.
    service.recoverFscacheMounts();
    service.startFscache();
    // Each worker has its own copy of an activated socket (fork): adopting it leaves the
    // supervisor's for the next worker.
    ControlServer server = control_socket >= 0 ? ControlServer::adopt(control_socket, service)
                                               : ControlServer::bind(config.daemon.socket, service);
    log::info("serving on {}", config.daemon.socket.string());
    ready();
    const int sig = waitForStopSignal(stop_signals);
    log::info("{}: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    server.stop();
    service.shutdown();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"rafsd: serves RAFS v6 / EROFS images to the kernel on demand"};
    app.require_subcommand(1);

    std::string config_path = kDefaultConfig;
    std::string engine, blob_dir, cache_dir, bootstrap, mountpoint, fsid, domain_id;
    auto* m = app.add_subcommand("mount", "mount one image and serve it in the foreground until SIGINT/SIGTERM");
    auto* m_config = m->add_option("--config", config_path, "config file (default /etc/rafsd/config.toml if present)");
    m->add_option("--engine", engine, "auto (default), fanotify or fscache");
    m->add_option("--blob-dir", blob_dir, "directory of blobs named by blob id (localfs backend)");
    m->add_option("--cache-dir", cache_dir, "where cache files and their state live");
    m->add_option("--fsid", fsid, "fscache: the image's id (default: derived from the bootstrap)");
    m->add_option("--domain-id", domain_id, "fscache: share cache files of equal blobs within this domain");
    unsigned fetch_delay_ms = 0;
    m->add_option("--test-fetch-delay", fetch_delay_ms,
                  "for tests: delay every backend read by this many milliseconds");
    m->add_option("BOOTSTRAP", bootstrap, "image.boot")->required();
    m->add_option("MOUNTPOINT", mountpoint, "where to mount it")->required();

    auto* s = app.add_subcommand("serve", "run as a service with a control socket (see rafsctl)");
    auto* s_config = s->add_option("--config", config_path, "config file (default /etc/rafsd/config.toml if present)");
    s->add_option("--test-fetch-delay", fetch_delay_ms,
                  "for tests: delay every backend read by this many milliseconds");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "rafsd: " << e.what() << "\n";
        return 2;
    }

    try {
        const sigset_t stop_signals = blockStopSignals();
        const bool explicit_config = m_config->count() + s_config->count() > 0;
        Config config = loadConfig(config_path, explicit_config);
        if (!cache_dir.empty()) config.daemon.cache_dir = fs::absolute(cache_dir);
        if (!engine.empty()) {
            auto kind = parseEngineKind(engine);
            if (!kind) rafs::fail("--engine '{}' is not one of {}", engine, kEngineNames);
            config.daemon.engine = *kind;
        }
        log::setLevel(levelOf(config.daemon.log_level));

        if (m->parsed()) {
            MountRequest request;
            request.bootstrap = fs::absolute(bootstrap);
            request.mountpoint = fs::absolute(mountpoint);
            if (!blob_dir.empty()) request.blob_dir = fs::absolute(blob_dir);
            if (!fsid.empty()) request.fsid = fsid;
            if (!domain_id.empty()) request.domain_id = domain_id;
            const std::chrono::milliseconds fetch_delay(fetch_delay_ms);
            if (ImageService::resolveEngine(config.daemon.engine) == EngineKind::Fscache) {
                // Still single-threaded: the supervisor forks the worker, which starts the threads.
                std::optional<SupervisedDevice> device;
                try {
                    device.emplace(acquireFscacheDevice(config.daemon.cache_dir / "fscache", "rafsd"));
                } catch (const std::exception& e) {
                    if (config.daemon.engine != EngineKind::Auto) throw;
                    log::info("fscache engine unusable ({}); trying fanotify", e.what());
                    config.daemon.engine = EngineKind::Fanotify;
                }
                if (device) {
                    return superviseFscache(std::move(*device), [&](FscacheDevice d, bool restored, const auto& ready) {
                        return fscacheWorker(config, request, fetch_delay, stop_signals, std::move(d), restored, ready);
                    });
                }
            }
            ImageService service(config);
            service.setFetchDelay(fetch_delay);
            service.mount(request);
            sd_notify(0, "READY=1");
            int sig = waitForStopSignal(stop_signals);
            log::info("{}: unmounting", sig == SIGINT ? "SIGINT" : "SIGTERM");
            sd_notify(0, "STOPPING=1");
            service.shutdown();
            return 0;
        }
        const std::chrono::milliseconds fetch_delay(fetch_delay_ms);
        // With fscache as the configured engine, the device is bound at start and supervised, as
        // for `rafsd mount`: fscache mounts then survive the death of a worker or, through
        // systemd's fd store, of the whole service. Otherwise fscache mounts requested explicitly
        // bind the device on first use, without failover.
        bool supervise = false;
        try {
            supervise = ImageService::resolveEngine(config.daemon.engine) == EngineKind::Fscache;
        } catch (const std::exception&) {
            if (config.daemon.engine == EngineKind::Fscache) throw;
        }
        if (supervise) {
            // Still single-threaded: the supervisor forks the worker, which starts the threads.
            const int control_socket = activatedControlSocket();
            std::optional<SupervisedDevice> device;
            try {
                device.emplace(acquireFscacheDevice(config.daemon.cache_dir / "fscache", "rafsd"));
            } catch (const std::exception& e) {
                if (config.daemon.engine != EngineKind::Auto) throw;
                log::info("fscache engine unusable ({}); serving without it", e.what());
            }
            if (device) {
                return superviseFscache(std::move(*device), [&](FscacheDevice d, bool restored, const auto& ready) {
                    return serveWorker(config, fetch_delay, stop_signals, control_socket, std::move(d), restored,
                                       ready);
                });
            }
        }
        ImageService service(config);
        service.setFetchDelay(fetch_delay);
        ControlServer server = ControlServer::fromSystemdOrPath(config.daemon.socket, service);
        log::info("serving on {}", config.daemon.socket.string());
        sd_notify(0, "READY=1");
        int sig = waitForStopSignal(stop_signals);
        log::info("{}: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
        sd_notify(0, "STOPPING=1");
        server.stop();
        service.shutdown();
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "rafsd: " << e.what() << "\n";
        return 1;
    }
}
