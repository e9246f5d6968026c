// rafsd: serves RAFS v6 images to the kernel on demand. `mount` serves one image in the
// foreground; `serve` is the long-running service driven through the control socket (rafsctl).
#include "builder/format/Error.h"
#include "daemon/api/Config.h"
#include "daemon/api/ControlServer.h"
#include "daemon/api/ImageService.h"
#include "daemon/core/Log.h"

#include <CLI/CLI.hpp>
#include <systemd/sd-daemon.h>

#include <csignal>
#include <filesystem>
#include <iostream>

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
    m->add_option("BOOTSTRAP", bootstrap, "image.boot")->required();
    m->add_option("MOUNTPOINT", mountpoint, "where to mount it")->required();

    auto* s = app.add_subcommand("serve", "run as a service with a control socket (see rafsctl)");
    auto* s_config = s->add_option("--config", config_path, "config file (default /etc/rafsd/config.toml if present)");

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

        ImageService service(config);
        if (m->parsed()) {
            MountRequest request;
            request.bootstrap = fs::absolute(bootstrap);
            request.mountpoint = fs::absolute(mountpoint);
            if (!blob_dir.empty()) request.blob_dir = fs::absolute(blob_dir);
            if (!fsid.empty()) request.fsid = fsid;
            if (!domain_id.empty()) request.domain_id = domain_id;
            service.mount(request);
            sd_notify(0, "READY=1");
            int sig = waitForStopSignal(stop_signals);
            log::info("{}: unmounting", sig == SIGINT ? "SIGINT" : "SIGTERM");
            sd_notify(0, "STOPPING=1");
            service.shutdown();
            return 0;
        }
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
