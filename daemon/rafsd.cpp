// rafsd: serves RAFS v6 images to the kernel on demand. `mount` serves one image in the
// foreground; `serve` is the long-running service driven through the control socket (rafsctl).
#include "format/CommandLine.h"
#include "format/Error.h"
#include "daemon/api/Config.h"
#include "daemon/api/ControlServer.h"
#include "daemon/api/ImageService.h"
#include "daemon/api/MetricsServer.h"
#include "daemon/api/MountInfo.h"
#include "daemon/api/MountTable.h"
#include "daemon/core/Log.h"
#include "daemon/engines/fanotify/FanotifyGroup.h"
#include "daemon/process/ProcessIdentity.h"
#include "daemon/process/StopSignals.h"
#include "daemon/process/Supervisor.h"
#include "registry/ImageReference.h"

#include <CLI/CLI.hpp>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <csignal>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <thread>

namespace fs = std::filesystem;
using namespace rafsd;

namespace {

constexpr const char* kKeptDevice = "cachefiles";
// How long a serve worker waits for the mount table's lock (lockServedMountTable): a predecessor
// that ended has let it go; one that holds it this long is another rafsd serve's.
constexpr std::chrono::seconds kTableLockWait{5};

// The kernel objects a supervisor keeps for its workers (Supervisor.h).
struct KernelObjects {
    EngineKind engine;
    KeptFds kept;
    bool restored = false;  // taken from systemd's fd store: a previous rafsd died on them
};

// Whether `kept` (systemd's fd store) holds the objects of `engine` a previous rafsd died on.
bool storesObjectsOf(const KeptFds& kept, EngineKind engine) {
    if (engine == EngineKind::Fscache) return kept.find(kKeptDevice) >= 0;
    return kept.find(ImageService::kKeptGroup) >= 0 && kept.find(ImageService::kKeptJournal) >= 0;
}

// Fails over to the stored objects of `engine` (systemd's fd store, or passed on by a reload); for
// fanotify, ending the worker of the previous rafsd if it still reads the group (two readers would
// answer each other's events).
KernelObjects takeStored(EngineKind engine, KeptFds kept, bool reloaded) {
    const char* from = reloaded ? "passed on by the previous rafsd (reload); taking its mounts over"
                                : "taken from systemd's fd store; failing over";
    if (engine == EngineKind::Fscache) {
        log::info("{}: {}", FscacheDevice::kPath, from);
    } else {
        log::info("fanotify group {}", from);
        const int journal = kept.find(ImageService::kKeptJournal);
        const auto owner = PendingJournal::adopt(rafs::UniqueFd::duplicate(journal, "the kept fanotify journal")).owner();
        if (owner) endProcess(*owner, std::chrono::seconds(10));
    }
    return {engine, std::move(kept), true};
}

// New objects of `engine`, kept in `kept` so that workers and a restarted service can fail over.
// Throws Error saying what is missing, leaving `kept` as it was.
KernelObjects createObjects(EngineKind engine, const Config& config, KeptFds& kept) {
    if (engine == EngineKind::Fscache) {
        FscacheDevice device = FscacheDevice::open(config.daemon.cache_dir / "fscache", "rafsd");
        kept.keep(kKeptDevice, device.fd());
    } else {
        const rafs::UniqueFd group = FanotifyEngine::createGroup();
        const PendingJournal journal = PendingJournal::create();
        kept.keep(ImageService::kKeptGroup, group.get());
        kept.keep(ImageService::kKeptJournal, journal.fd());
    }
    return {engine, std::move(kept), false};
}

// The kernel objects to serve with: those a previous rafsd stored (its mounts live on them, so
// they decide the engine unless the configuration names the other), else new ones of `engine`;
// with `auto`, falling back from an unusable fscache to fanotify as ImageService does. systemd's
// store is read once: its fds are this process's, and a failed attempt must not close them.
KernelObjects acquire(EngineKind configured, EngineKind engine, const Config& config) {
    // The supervisor holds an fd for every cache file its workers open: at a soft limit of 1024
    // one it cannot take is dropped, and the next worker would open that file after its mark.
    raiseFdLimit();
    KeptFds kept = KeptFds::fromReload();
    const bool reloaded = !kept.empty();
    // A reload names the engine it passed on: the set may also hold another engine's objects,
    // stored by a rafsd before it for mounts this configuration does not serve.
    const std::optional<EngineKind> passed = reloaded ? parseEngineKind(InPlaceRestart::reloadedEngine().value_or(""))
                                                      : std::nullopt;
    if (!reloaded) kept = KeptFds::fromSystemd();
    for (const EngineKind stored : {EngineKind::Fscache, EngineKind::Fanotify}) {
        const bool wanted = reloaded ? !passed || passed == stored : configured == EngineKind::Auto || configured == stored;
        if (storesObjectsOf(kept, stored) && wanted) return takeStored(stored, std::move(kept), reloaded);
    }
    if (reloaded) rafs::fail("the previous rafsd passed on no kernel objects of an engine; nothing to take over");
    if (engine == EngineKind::Fscache) {
        try {
            return createObjects(EngineKind::Fscache, config, kept);
        } catch (const std::exception& e) {
            if (configured != EngineKind::Auto) throw;
            log::info("fscache engine unusable ({}); trying fanotify", e.what());
            FanotifyEngine::checkKernel();
        }
    }
    return createObjects(EngineKind::Fanotify, config, kept);
}

SupervisorOptions supervisorOptions(EngineKind engine) {
    SupervisorOptions options;
    options.engine = engineName(engine);
    options.worker_dies_with_supervisor = engine == EngineKind::Fscache;
    options.fail_closed = engine == EngineKind::Fanotify;
    if (engine == EngineKind::Fscache) options.no_handover = FscacheDevice::lacksRestore();
    return options;
}

// In a worker: serve with the kernel objects the supervisor keeps.
void useKernelObjects(ImageService& service, EngineKind engine, KeptFds& kept, bool restored) {
    if (engine == EngineKind::Fscache) {
        service.useFscacheDevice(FscacheDevice::adopt(rafs::UniqueFd::duplicate(kept.find(kKeptDevice), FscacheDevice::kPath).release()),
                                 restored);
    } else {
        service.useFanotifyGroup(kept, restored);
    }
}

void startEngine(ImageService& service, EngineKind engine) {
    if (engine == EngineKind::Fscache) {
        service.startFscache();
    } else {
        service.startFanotify();
    }
}

// GET /metrics on the configured address, or nothing.
std::unique_ptr<MetricsServer> serveMetrics(const Config& config, ImageService& service) {
    if (config.metrics.address.empty()) return nullptr;
    return std::make_unique<MetricsServer>(config.metrics.address, [&service] { return service.metrics(); });
}

// The takeover of a worker on kernel objects a predecessor died on, up to serving. If it fails, the
// worker ends as a crash would, without unwinding: ImageService's destructor would unmount the
// mounts it took over and empty the state dir's table of them, so that neither the next worker nor
// a restarted rafsd could take them over. What it read from the kernel and left unanswered, the
// next worker answers, as after a kill (Supervisor.h).
template <typename TakeOver>
auto takeOverOrExit(TakeOver&& take_over) -> decltype(take_over()) {
    try {
        return take_over();
    } catch (const std::exception& e) {
        std::cerr << "rafsd: " << e.what() << "; the mounts taken over are left to the next worker\n";
        ::_exit(1);
    }
}

// `rafsd mount`: the worker body that supervise() forks.
int mountWorker(const Config& config, EngineKind engine, MountRequest request, std::chrono::milliseconds fetch_delay,
                const sigset_t& stop_signals, KeptFds& kept, bool restored, const std::function<void()>& ready) {
    ImageService service(config);
    service.setFetchDelay(fetch_delay);
    useKernelObjects(service, engine, kept, restored);
    const auto metrics = serveMetrics(config, service);  // bound first: a taken port mounts nothing
    request.engine = engine;
    // An image mounted by reference: what the kernel has mounted is the manifest the first worker
    // resolved, which a later worker must serve even if the tag has moved since. The mount is
    // recorded as rafsd serve records its mounts, in a table of this supervisor's (the workers'
    // parent) own.
    fs::path table;
    if (request.image) {
        table = imageMountTable(config.daemon.state_dir, ::getppid());
        service.keepMountTable(table);
    }
    // After a failover the kernel keeps the image mounted: take it over instead of mounting again.
    // fscache: its cookies must be known before `restore` makes the kernel resend the OPENs;
    // fanotify: its files before the events the dead worker left are answered.
    if (restored && hasErofsMount(request.mountpoint)) {
        takeOverOrExit([&] {
            if (!table.empty() && fs::exists(table)) {
                service.recoverMounts();
                if (service.list()["images"].empty()) rafs::fail("{}: cannot take it over", request.mountpoint.string());
            } else {
                service.reattach(request);
            }
            startEngine(service, engine);
        });
    } else {
        startEngine(service, engine);
        service.mount(request);
    }
    ready();
    const int sig = waitForStopSignal(stop_signals);
    log::info("{}: unmounting", stopSignalName(sig));
    const size_t left_up = service.shutdown();
    if (!table.empty()) {
        std::error_code ignored;  // a table left behind lists no mount: the shutdown emptied it
        fs::remove(table, ignored);
    }
    return left_up == 0 ? 0 : 1;
}

// The mounts this worker could not take over (ImageService::retryUnserved), tried again with a delay
// growing from a second to a minute, until none is left or the stop: the supervisor does the same
// for a worker that could take over none (Supervisor.h).
void retryUnserved(ImageService& service, const std::atomic<bool>& stopping) {
    using Clock = std::chrono::steady_clock;
    constexpr auto kStep = std::chrono::milliseconds(100);  // how soon a stop is seen
    constexpr std::chrono::milliseconds kMaxDelay = std::chrono::minutes(1);
    for (std::chrono::milliseconds delay = std::chrono::seconds(1);; delay = std::min(delay * 2, kMaxDelay)) {
        for (const auto until = Clock::now() + delay; Clock::now() < until;) {
            if (stopping.load()) return;
            std::this_thread::sleep_for(kStep);
        }
        try {
            if (service.retryUnserved() == 0) return;
        } catch (const std::exception& e) {
            log::error("taking over the mounts left unserved: {}; trying again", e.what());
        }
    }
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

// `rafsd serve`: the worker body that supervise() forks. The table of mounts in the state dir tells
// a worker that takes the kernel objects over (after a worker died, or rafsd was restarted with
// them from systemd's store) which mounts to reattach.
int serveWorker(const Config& config, EngineKind engine, std::chrono::milliseconds fetch_delay,
                const sigset_t& stop_signals, int control_socket, KeptFds& kept, bool restored,
                const std::function<void()>& ready) {
    // Declared first, so held until the service's destructor has written the table for the last time.
    rafs::UniqueFd table_lock;
    ImageService service(config);
    service.setFetchDelay(fetch_delay);
    service.keepMountTable(servedMountTable(config.daemon.state_dir));
    useKernelObjects(service, engine, kept, restored);
    const auto metrics = serveMetrics(config, service);
    // Each worker has its own copy of an activated socket (fork), and serves a duplicate of it:
    // the supervisor's copy is left for the next worker, this one's for a server started again.
    auto controlServer = [&] {
        return control_socket >= 0
                   ? ControlServer::adopt(rafs::UniqueFd::duplicate(control_socket, "the control socket").release(), service)
                   : ControlServer::bind(config.daemon.socket, service);
    };
    auto serveTakenOver = [&] {
        // A second rafsd serve started by hand beside the service would otherwise rewrite the
        // mount table of the one serving (without the mounts it cannot take over) before its
        // bind failed. A worker taking over follows one that is gone.
        if (control_socket < 0 && !restored) ControlServer::checkFree(config.daemon.socket);
        table_lock = lockServedMountTable(config.daemon.state_dir, kTableLockWait);
        service.recoverMounts();
        startEngine(service, engine);
        return controlServer();
    };
    ControlServer server = restored ? takeOverOrExit(serveTakenOver) : serveTakenOver();
    log::info("serving on {}", config.daemon.socket.string());
    ready();
    std::atomic<bool> stopping{false};
    std::thread remounter([&] {
        try {
            service.remountAtStart(stopping);
        } catch (const std::exception& e) {
            log::error("mounting the layer store images again: {}", e.what());
        }
        retryUnserved(service, stopping);
    });
    for (;;) {
        const int sig = waitForStopSignal(stop_signals);
        if (sig != SIGHUP) {
            log::info("{}: stopping", stopSignalName(sig));
            break;
        }
        // Checked with no control request running or to come: a mount made after the check
        // could be one the next rafsd cannot take over. Nothing here may unwind out of this
        // function: ImageService's destructor would unmount everything.
        try {
            server.stop(ControlServer::SocketFile::Leave);
            if (service.mountsOutliveWorker()) {
                kept.answerHandOver(true);
                log::info("SIGHUP: handing over to the next rafsd (reload)");
                service.handOver();
                // Without the destructors: they would unmount (InPlaceRestart.h).
                ::_exit(kWorkerHandedOver);
            }
            kept.answerHandOver(false);
            server = controlServer();
        } catch (const std::exception& e) {
            log::error("SIGHUP: {}; serving on{}", e.what(), server.stopped() ? " without a control socket" : "");
            kept.answerHandOver(false);
        }
    }
    stopping.store(true);
    remounter.join();  // after the mount in progress, if any
    server.stop();
    // A mount in use whose cache files cannot be completed stays for the next rafsd serve.
    return service.shutdown(true) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"rafsd: serves RAFS v6 / EROFS images to the kernel on demand"};
    app.require_subcommand(1);

    std::string config_path = kDefaultConfigPath;
    std::string engine, blob_dir, cache_dir, state_dir, bootstrap, mountpoint, fsid, domain_id;
    auto* m = app.add_subcommand("mount", "mount one image and serve it in the foreground until SIGINT/SIGTERM");
    auto* m_config = m->add_option("--config", config_path, "config file (default /etc/rafsd/config.toml if present)");
    m->add_option("--engine", engine, "auto (default), fanotify or fscache");
    m->add_option("--blob-dir", blob_dir, "directory of blobs named by blob id (localfs backend)");
    m->add_option("--cache-dir", cache_dir, "where cache files and their state live");
    m->add_option("--state-dir", state_dir,
                  "where images mounted by reference, mount tables and start traces are kept (default /var/lib/rafsd)");
    m->add_option("--fsid", fsid, "fscache: the image's id (default: derived from the bootstrap)");
    m->add_option("--domain-id", domain_id, "fscache: share cache files of equal blobs within this domain");
    unsigned fetch_delay_ms = 0;
    m->add_option("--test-fetch-delay", fetch_delay_ms,
                  "for tests: delay every backend read by this many milliseconds");
    m->add_option("IMAGE", bootstrap,
                  "a bootstrap (image.boot) or Nydus blob; a path that does not exist is an image reference, "
                  "HOST[:PORT]/REPO[:TAG|@sha256:DIGEST], of a RAFS image in a registry")
        ->required();
    m->add_option("MOUNTPOINT", mountpoint, "where to mount it")->required();

    auto* s = app.add_subcommand("serve", "run as a service with a control socket (see rafsctl)");
    auto* s_config = s->add_option("--config", config_path, "config file (default /etc/rafsd/config.toml if present)");
    s->add_option("--test-fetch-delay", fetch_delay_ms,
                  "for tests: delay every backend read by this many milliseconds");
    bool check_config = false;
    s->add_flag("--check-config", check_config,
                "read the configuration, say whether it is valid and exit (a reload runs this first)");

    if (const auto exit_status = rafs::parseCommandLine(app, argc, argv, "rafsd")) return *exit_status;

    try {
        const sigset_t stop_signals = blockStopSignals();
        const bool explicit_config = m_config->count() + s_config->count() > 0;
        Config config = loadIfPresent(config_path, explicit_config);
        if (!cache_dir.empty()) config.daemon.cache_dir = fs::absolute(cache_dir);
        if (!state_dir.empty()) config.daemon.state_dir = fs::absolute(state_dir);
        if (!engine.empty()) {
            auto kind = parseEngineKind(engine);
            if (!kind) rafs::fail("--engine '{}' is not one of {}", engine, kEngineNames);
            config.daemon.engine = *kind;
        }
        log::setLevel(logLevel(config.daemon.log_level));
        if (check_config) {
            // The last words are what a reload compares (InPlaceRestart::check).
            std::cout << "rafsd: configuration ok ("
                      << (fs::exists(config_path) ? config_path : std::string("none found: the defaults"))
                      << "); cache_dir " << config.daemon.cache_dir.string() << "; state_dir "
                      << config.daemon.state_dir.string() << "\n";
            return 0;
        }

        if (m->parsed()) {
            MountRequest request;
            if (fs::exists(bootstrap)) {
                request.bootstrap = fs::absolute(bootstrap);
            } else {
                registry::ImageReference::ofArgument(bootstrap);  // a mistyped path is named as such
                request.image = bootstrap;
            }
            request.mountpoint = fs::absolute(mountpoint);
            if (!blob_dir.empty()) request.blob_dir = fs::absolute(blob_dir);
            if (!fsid.empty()) request.fsid = fsid;
            if (!domain_id.empty()) request.domain_id = domain_id;
            const std::chrono::milliseconds fetch_delay(fetch_delay_ms);
            // Still single-threaded: the supervisor forks the worker, which starts the threads.
            const EngineKind configured = config.daemon.engine;
            KernelObjects objects = acquire(configured, ImageService::resolveEngine(configured), config);
            const EngineKind engine_kind = objects.engine;
            return supervise(std::move(objects.kept), objects.restored, supervisorOptions(engine_kind),
                             [&](KeptFds& kept, bool restored, const auto& ready) {
                                 return mountWorker(config, engine_kind, request, fetch_delay, stop_signals, kept,
                                                    restored, ready);
                             });
        }
        const std::chrono::milliseconds fetch_delay(fetch_delay_ms);
        // The configured engine's kernel objects are acquired at start and supervised: its mounts
        // then survive the death of a worker or, through systemd's fd store, of the whole service.
        // Mounts requested explicitly with the other engine get its objects on first use, without
        // failover; so does everything when no engine works on this kernel (each mount says why).
        // After a reload the objects passed on decide, whatever the configuration names now: their
        // mounts are up. The holder's pipe is taken first, so that nothing but supervise() holds it.
        const bool reloaded = std::getenv(KeptFds::kReloadEnv) != nullptr;
        rafs::UniqueFd release = InPlaceRestart::takeRelease();
        std::optional<EngineKind> engine_kind;
        try {
            engine_kind = ImageService::resolveEngine(config.daemon.engine);
        } catch (const std::exception& e) {
            if (config.daemon.engine != EngineKind::Auto && !reloaded) throw;
            log::warn("no engine usable on this kernel ({}); serving without one", e.what());
        }
        if (engine_kind || reloaded) {
            // Still single-threaded: the supervisor forks the worker, which starts the threads.
            const int control_socket = activatedControlSocket();
            KernelObjects objects =
                acquire(config.daemon.engine, engine_kind.value_or(EngineKind::Fanotify), config);
            const EngineKind kind = objects.engine;
            SupervisorOptions options = supervisorOptions(kind);
            options.reload = InPlaceRestart::ofThisProcess(argc, argv);
            options.reload->control_socket = control_socket;
            options.reload->engine = engineName(kind);
            options.reload->state_dir = config.daemon.state_dir.string();
            options.reload->cache_dir = config.daemon.cache_dir.string();
            return supervise(std::move(objects.kept), objects.restored, options,
                             [&](KeptFds& kept, bool restored, const auto& ready) {
                                 return serveWorker(config, kind, fetch_delay, stop_signals, control_socket, kept,
                                                    restored, ready);
                             },
                             std::move(release));
        }
        ImageService service(config);
        service.setFetchDelay(fetch_delay);
        service.startCollecting();
        ControlServer server = ControlServer::fromSystemdOrPath(config.daemon.socket, service);
        log::info("serving on {}", config.daemon.socket.string());
        const auto metrics = serveMetrics(config, service);
        sd_notify(0, "READY=1");
        int sig = 0;
        while ((sig = waitForStopSignal(stop_signals)) == SIGHUP) {
            log::warn("SIGHUP: no engine's kernel objects are supervised here, so there is nothing to reload with");
        }
        log::info("{}: stopping", stopSignalName(sig));
        sd_notify(0, "STOPPING=1");
        server.stop();
        service.shutdown();
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "rafsd: " << e.what() << "\n";
        return 1;
    }
}
