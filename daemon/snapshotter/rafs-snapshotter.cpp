// rafs-snapshotter: a containerd proxy snapshotter (containerd's snapshots API over gRPC on a unix
// socket) that serves RAFS images as remote snapshots mounted by rafsd, and every other image as
// containerd's overlayfs snapshotter would. A program of its own rather than a mode of rafsd: it
// links gRPC, which rafsd does not need, and restarting either never touches the other's state.
//   serve       the service (see daemon/systemd/rafs-snapshotter.service.in)
//   register    the remote Prepare of a RAFS image's layers through containerd, for ctr
//   unregister  removes what register made
#include "format/CommandLine.h"
#include "daemon/api/Config.h"
#include "daemon/api/UnixListener.h"
#include "daemon/core/Log.h"
#include "daemon/process/StopSignals.h"
#include "daemon/snapshotter/ContainerdRegistration.h"
#include "daemon/snapshotter/RafsdMounts.h"
#include "daemon/snapshotter/RemoteLayers.h"
#include "daemon/snapshotter/SnapshotService.h"
#include "daemon/snapshotter/SnapshotStore.h"
#include "format/Error.h"
#include "format/FileLock.h"
#include "format/UniqueFd.h"

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <systemd/sd-daemon.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <thread>

namespace fs = std::filesystem;
using namespace rafsd;

namespace {

int serve(const fs::path& given_root, const fs::path& address, const Config& config) {
    const sigset_t stop = blockStopSignals();

    std::error_code ec;
    fs::create_directories(given_root, ec);
    if (ec) rafs::fail("cannot create {}: {}", given_root.string(), ec.message());
    // Resolved: the kernel lists mounts by their resolved paths (/proc/self/mountinfo), and the
    // snapshotter finds its image mounts there by path.
    const fs::path root = fs::canonical(given_root, ec);
    if (ec) rafs::fail("cannot resolve {}: {}", given_root.string(), ec.message());
    // One snapshotter per root: two would each rewrite the snapshot table without the other's.
    const rafs::UniqueFd root_lock(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (root_lock.get() < 0) rafs::failErrno("cannot open " + root.string());
    if (rafs::lockExclusive(root_lock.get(), std::chrono::steady_clock::time_point{}, root.string()) ==
        rafs::LockOutcome::TimedOut) {
        rafs::fail("{} is the root of another rafs-snapshotter, which is running", root.string());
    }
    fs::create_directories(address.parent_path(), ec);
    if (ec) rafs::fail("cannot create {}: {}", address.parent_path().string(), ec.message());
    // A socket file a dead snapshotter left would make the bind fail; one a live one listens on
    // is its connection to containerd, which gRPC's bind would take away (it unlinks the path).
    UnixListener::checkFree(address);
    fs::remove(address, ec);

    SnapshotStore store(root);
    RemoteLayers remote(config.backend);
    RafsdMounts mounts(config.daemon.socket);
    SnapshotService service(store, remote, mounts);
    service.removeLeftovers();

    grpc::ServerBuilder builder;
    int bound = 0;
    builder.AddListeningPort("unix:" + address.string(), grpc::InsecureServerCredentials(), &bound);
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server || bound == 0) rafs::fail("cannot listen on {}", address.string());
    log::info("serving containerd's snapshots API on {} (root {}, rafsd at {})", address.string(), root.string(),
              config.daemon.socket.string());
    sd_notify(0, "READY=1");

    std::thread waiter([&] { server->Wait(); });
    // After READY: with the registry away, remounting every image could outlast systemd's start
    // timeout, and ordinary images need no rafsd.
    std::atomic<bool> stopping{false};
    std::thread remounter([&] { service.remountImages(stopping); });
    const int sig = waitForStopSignal(stop);
    sd_notify(0, "STOPPING=1");
    log::info("{}: stopping (rafsd keeps serving the mounts)", stopSignalName(sig));
    stopping.store(true);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    waiter.join();
    remounter.join();
    fs::remove(address, ec);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"rafs-snapshotter: containerd snapshotter serving RAFS images lazily through rafsd"};
    app.require_subcommand(1);
    std::string config_path = kDefaultConfigPath;
    app.add_option("--config", config_path, "rafsd's config file: its socket and registry settings (default "
                                            "/etc/rafsd/config.toml if present)");
    bool verbose = false;
    app.add_flag("--verbose", verbose, "log every request (default: rafsd's daemon.log_level)");

    std::string root = "/var/lib/rafs-snapshotter";
    std::string address = "/run/rafs-snapshotter/rafs.sock";
    auto* s = app.add_subcommand("serve", "serve containerd's snapshots API");
    s->add_option("--root", root, "state directory (default /var/lib/rafs-snapshotter)");
    s->add_option("--address", address, "unix socket to listen on (default /run/rafs-snapshotter/rafs.sock)");

    ContainerdTarget target;
    std::string containerd_socket = target.socket.string();
    std::string image;
    const auto addTarget = [&](CLI::App* c) {
        c->add_option("--containerd", containerd_socket, "containerd's socket (default /run/containerd/containerd.sock)");
        c->add_option("--namespace", target.namespace_name, "containerd namespace (default: default)");
        c->add_option("--snapshotter", target.snapshotter, "the snapshotter's name in containerd's config (default: rafs)");
        c->add_option("IMAGE", image, "a RAFS image, HOST[:PORT]/REPO[:TAG|@DIGEST]")->required();
    };
    auto* r = app.add_subcommand("register", "prepare a RAFS image's layers remotely through containerd, for ctr run");
    addTarget(r);
    auto* u = app.add_subcommand("unregister", "remove the snapshots register made for an image");
    addTarget(u);
    if (const auto exit_status = rafs::parseCommandLine(app, argc, argv, "rafs-snapshotter")) return *exit_status;

    try {
        const Config config = loadIfPresent(config_path, app.get_option("--config")->count() > 0);
        log::setProgram("rafs-snapshotter");
        log::setLevel(verbose ? log::Level::Debug : logLevel(config.daemon.log_level));
        if (s->parsed()) return serve(fs::absolute(root), fs::absolute(address), config);
        target.socket = containerd_socket;
        RemoteLayers registries(config.backend);
        if (r->parsed()) {
            for (const RegisteredLayer& layer : registerImage(registries, target, image)) {
                std::cout << layer.digest << " " << layer.chain_id << "\n";
            }
            std::cout << "registered " << image << " with snapshotter " << target.snapshotter << " in namespace "
                      << target.namespace_name << "\n";
        } else {
            unregisterImage(registries, target, image);
            std::cout << "unregistered " << image << "\n";
        }
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "rafs-snapshotter: " << e.what() << "\n";
        return 1;
    }
}
