// What rafsd does for its users: mounts images (load the bootstrap, open or create each blob's
// cache, register with the fetcher, hand the mount to an engine, start prefetch), unmounts them,
// and reports. Both `rafsd mount` and the control socket of `rafsd serve` drive it.
#pragma once

#include "builder/format/Bootstrap.h"
#include "daemon/api/Config.h"
#include "daemon/api/ControlServer.h"
#include "daemon/api/FscacheMountTable.h"
#include "daemon/backends/NetworkBackend.h"
#include "daemon/core/ChunkFetcher.h"
#include "daemon/core/Prefetcher.h"
#include "daemon/engines/fanotify/FanotifyEngine.h"
#include "daemon/engines/fscache/FscacheEngine.h"

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace rafsd {

class ImageService : public ControlHandler {
public:
    explicit ImageService(Config config);
    ~ImageService() override;  // shutdown()

    nlohmann::json mount(const MountRequest& request) override;
    nlohmann::json umount(const UmountRequest& request) override;
    nlohmann::json list() override;
    nlohmann::json status(const StatusRequest& request) override;

    // Stops prefetch, lets pending reads finish or fail, unmounts everything. Idempotent.
    void shutdown();

    // The engine `auto` resolves to on this kernel, or an Error saying what the kernel lacks.
    static EngineKind resolveEngine(EngineKind requested);

    // Failover: serve fscache mounts on `device`, bound by another process (the supervisor, or
    // systemd's fd store). `restore`: a previous daemon died on it; call reattach() for the mounts
    // it left, then startFscache(), which asks the kernel to resend what that daemon left pending.
    void useFscacheDevice(FscacheDevice device, bool restore);
    // Takes over an image the kernel still has mounted with the fscache engine: its caches and
    // cookies, no mount(2). Needs useFscacheDevice() first.
    nlohmann::json reattach(const MountRequest& request);
    void startFscache();
    // rafsd serve's failover: keeps the table of fscache mounts at `table` (FscacheMountTable.h),
    // rewritten before each fscache mount(2) and after each unmount. Call before any mount.
    void keepFscacheTable(std::filesystem::path table) { fscache_table_ = std::move(table); }
    // After useFscacheDevice(), before startFscache(): the mounts of the table. On a device a
    // previous daemon died on, every one still mounted is reattached; on a new device they are dead
    // (their cache died with the daemon that made them), so they are reported and forgotten.
    void recoverFscacheMounts();
    // True if `dir` is the root of an EROFS mount (e.g. one a dead daemon left behind).
    static bool hasErofsMount(const std::filesystem::path& dir);

    // Test aid: every backend read waits `delay` first, so a test can keep a miss pending.
    void setFetchDelay(std::chrono::milliseconds delay) { fetch_delay_ = delay; }

private:
    struct Image {
        uint32_t index = 0;
        std::filesystem::path bootstrap;
        std::filesystem::path mountpoint;
        EngineKind engine = EngineKind::Fanotify;
        std::vector<std::shared_ptr<CachedBlob>> blobs;
        std::string fsid;       // fscache only
        std::string domain_id;  // fscache only; may be empty
        std::optional<std::filesystem::path> blob_dir;  // as requested; for the fscache table
    };

    // Creates the network backend on first use: its connections, tokens and counters are shared
    // by every image that uses it.
    std::shared_ptr<Backend> backendFor(const MountRequest& request);
    // `fscache_volume` empty: a sparse cache file (fanotify). Otherwise the blob's cache file is the
    // kernel's cachefiles object in that volume ("<domain_id or fsid>"), which is per volume: a
    // blob is shared only within one.
    std::shared_ptr<CachedBlob> openBlob(const rafs::Bootstrap& bootstrap, const rafs::BootstrapBlob& blob,
                                         const std::shared_ptr<Backend>& backend,
                                         const std::string& fscache_volume = {});
    std::vector<PrefetchChunk> prefetchTableChunks(const rafs::Bootstrap& bootstrap,
                                                   const std::vector<std::shared_ptr<CachedBlob>>& blobs) const;
    FanotifyEngine& fanotify();
    FscacheEngine& fscache();
    nlohmann::json mountOrReattach(const MountRequest& request, bool reattach);
    // How an fscache image reaches the kernel: rafsd mounts it, a previous daemon's mount is taken
    // over, or the image is only registered and the user mounts it by hand.
    enum class FscacheAttach { Mount, Reattach, Register };
    void mountFscache(Image& image, const rafs::Bootstrap& bootstrap, FscacheAttach how);
    nlohmann::json blobStatus(const CachedBlob& blob) const;
    // Rewrites the fscache table (if kept) from images_, plus `adding` (about to be mounted).
    void saveFscacheTable(const Image* adding);
    // After a mount or unmount already happened: a failure only costs the failover, so it is logged.
    void saveFscacheTableOrLog();

    Config config_;
    std::mutex mutex_;  // one mount or umount at a time; guards the tables below
    std::unique_ptr<ChunkFetcher> fetcher_;
    std::unique_ptr<FanotifyEngine> fanotify_;
    std::unique_ptr<FscacheEngine> fscache_;
    std::unique_ptr<Prefetcher> prefetcher_;
    std::map<std::string, std::weak_ptr<CachedBlob>> blobs_;  // by blob id: shared across images
    std::vector<Image> images_;
    bool shut_down_ = false;
    bool fscache_restore_ = false;  // the adopted device had a daemon die on it
    std::filesystem::path fscache_table_;  // empty: not kept
    std::chrono::milliseconds fetch_delay_{0};
    std::shared_ptr<NetworkBackend> network_;  // backend.type http or registry, once used
};

}  // namespace rafsd
