// What rafsd does for its users: mounts images (load the bootstrap, open or create each blob's
// cache, register with the fetcher, hand the mount to an engine, start prefetch), unmounts them,
// and reports. Both `rafsd mount` and the control socket of `rafsd serve` drive it.
#pragma once

#include "format/Bootstrap.h"
#include "daemon/api/Config.h"
#include "daemon/api/ControlServer.h"
#include "daemon/api/BackendProbe.h"
#include "daemon/api/MountTable.h"
#include "daemon/api/RegistryImages.h"
#include "daemon/backends/NetworkBackend.h"
#include "daemon/backends/RegistryBackend.h"
#include "daemon/core/CacheCollector.h"
#include "daemon/core/ChunkFetcher.h"
#include "daemon/core/Prefetcher.h"
#include "daemon/engines/fanotify/FanotifyEngine.h"
#include "daemon/engines/fscache/FscacheEngine.h"
#include "daemon/api/KeptCacheFiles.h"
#include "daemon/process/KeptFds.h"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <atomic>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace rafsd {

class FscacheVolumes;

class ImageService : public ControlHandler {
public:
    explicit ImageService(Config config);
    ~ImageService() override;  // shutdown()

    nlohmann::json mount(const MountRequest& request) override;
    nlohmann::json umount(const UmountRequest& request) override;
    nlohmann::json list() override;
    nlohmann::json status(const StatusRequest& request) override;
    nlohmann::json trace(const TraceRequest& request) override;
    nlohmann::json resolve(const ResolveRequest& request) override;
    nlohmann::json gc(const GcRequest& request) override;
    // The counters of status, and latency histograms, in the Prometheus text format.
    std::string metrics();

    // Stops prefetch, lets pending reads finish or fail, unmounts everything. A fanotify mount
    // no worker could take over (recoverMounts) cannot have its files filled before the group goes:
    // it is unmounted, and one in use is left up (logged). So is, with `keep_unfilled`, a served
    // fanotify mount in use whose cache files could not be completed (FanotifyEngine::BusyAtStop):
    // both stay in the mount table, for the next rafsd serve to take over. Returns how many were
    // left so, whose holes read as zeros until then, plus the mounts in use off their paths whose
    // files could not be completed (zeros for good). Idempotent.
    size_t shutdown(bool keep_unfilled = false);
    // Mounts again what recoverMounts lists for it: the layer store images a stop unmounted, and
    // the fscache mounts a rafsd killed whole left failing (one still mounted, in use, waits for a
    // later start). One after another until `stopping`. Apart from recoverMounts: each may wait on
    // its registry, and a service must answer (and say READY) meanwhile.
    void remountAtStart(const std::atomic<bool>& stopping);
    // Reload (daemon/process/InPlaceRestart.h). Whether every mount lives on kernel objects the
    // supervisor keeps, so that the next rafsd can take it over; if not, logs the mounts that
    // would break.
    bool mountsOutliveWorker();
    // Saves the start traces; the caller then exits without unmounting, leaving the mounts and
    // what the kernel asked and was not answered to the next rafsd.
    void handOver();

    // The engine `auto` resolves to on this kernel, or an Error saying what the kernel lacks.
    static EngineKind resolveEngine(EngineKind requested);

    // Failover: serve fscache mounts on `device`, bound by another process (the supervisor, or
    // systemd's fd store). `restore`: a previous daemon died on it; call reattach() for the mounts
    // it left, then startFscache(), which asks the kernel to resend what that daemon left pending.
    void useFscacheDevice(FscacheDevice device, bool restore);
    // Takes over an image the kernel still has mounted: its caches and, with fscache, its cookies,
    // with fanotify, its marks; no mount(2). Needs useFscacheDevice() or useFanotifyGroup() first,
    // and the engine of the request set.
    nlohmann::json reattach(const MountRequest& request);
    void startFscache();
    // Names of the fds a supervisor keeps for fanotify workers (KeptFds.h): the group and its journal
    // of pending events; each blob's cache file, opened before it was marked, is kept too
    // (KeptCacheFiles.h).
    static constexpr const char* kKeptGroup = "fanotify";
    static constexpr const char* kKeptJournal = "fanotify-journal";
    static constexpr const char* kKeptSuperblocks = "fanotify-superblocks";

    // Failover: serve fanotify mounts on the group and journal in `kept`, which a supervisor keeps;
    // cache files are kept there too as they are opened, and taken from there when a mount is taken
    // over. `restore`: a previous worker died on them; call reattach() (or recoverMounts()) for the
    // mounts it left, then startFanotify(), which answers the events it left unanswered.
    void useFanotifyGroup(KeptFds& kept, bool restore);
    // Each also starts the cache collector (startCollecting()).
    void startFanotify();

    // Failover: keeps the table of the mounts at `table` (MountTable.h), rewritten before each
    // mount(2) and after each unmount. Call before any mount.
    void keepMountTable(std::filesystem::path table) { mount_table_ = std::move(table); }
    // After useFscacheDevice() / useFanotifyGroup(), before startFscache() / startFanotify(): the
    // mounts of the table. On kernel objects a previous daemon died on, every one still mounted is
    // reattached; otherwise they are dead (their cache or group died with the daemon that made
    // them), so they are reported and forgotten.
    void recoverMounts();
    // The fanotify mounts recoverMounts could not take over (a bootstrap or its backend gone), taken
    // over again: their reads fail meanwhile (an event for a file not served is denied). A mount no
    // longer there is forgotten. Returns how many are still unserved.
    size_t retryUnserved();

    // Starts collecting the cache automatically (cache.max_size): after the mounts a previous
    // worker left are taken over. startFscache() and startFanotify() call it.
    void startCollecting();

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
        // fscache only: the volume its blobs' cache files are in (blobKey).
        const std::string& fscacheVolume() const { return domain_id.empty() ? fsid : domain_id; }
        std::optional<std::filesystem::path> blob_dir;  // as requested; for the fscache table
        std::string image;            // mounted by reference: the reference as requested
        std::string manifest_digest;  // and the manifest it resolved to
        bool register_only = false;   // fscache: for the user's mount by hand
        bool layer_store = false;     // MountRequest::layer_store
        // fanotify: unmounted, but its superblock still reads its files (FanotifyEngine::umount),
        // which the engine serves under this name until it is gone.
        std::filesystem::path detached_as;
        int superblock_watch = -1;  // fanotify: MountRecord::superblock_watch
        std::vector<FileIdentity> cache_files;  // fanotify: MountRecord::cache_files
        // Blobs whose data in the cache at the mount is read without asking rafsd: its start
        // trace cannot see those reads (StartTrace::untraced_blobs).
        std::vector<std::string> untraced_blobs;
        // Where list, status and metrics say it is.
        const std::filesystem::path& shownAt() const { return detached_as.empty() ? mountpoint : detached_as; }
    };

    // Creates the network backend on first use: its connections, tokens and counters are shared
    // by every image that uses it.
    // `image`: the image's registry and repository, whatever backend.type says.
    std::shared_ptr<Backend> backendFor(const MountRequest& request, const registry::ImageReference* image);
    // The network backends made so far, each once (the names rafsctl status and /metrics show).
    std::vector<NetworkBackend*> networkBackends() const;
    // The reference `image` parsed; an error unless it names an image in a registry.
    static registry::ImageReference registryReference(const std::string& image);
    // One registry backend per registry and repository that images are mounted from, the configured
    // one (backend.type registry) among them.
    std::shared_ptr<RegistryBackend> registryBackend(const std::string& host, const std::string& repository);
    std::shared_ptr<RegistryBackend> registryBackend(const registry::ImageReference& image) {
        return registryBackend(image.host, image.repository);
    }
    // `fscache_volume` empty: a sparse cache file (fanotify). Otherwise the blob's cache file is the
    // kernel's cachefiles object in that volume ("<domain_id or fsid>"), which is per volume: a
    // blob is shared only within one. `taking_over`: a mount the kernel still has (no backend check).
    // `descriptor`: the blob's, loaded (loadBlobDescriptor) while an Opening of blobKey() was held;
    // nullopt: loaded here. A blob open already is shared if this image describes it the same way
    // (BlobDescriptor::fingerprint), else refused. `probed`: sizes the mount's probe already asked
    // the backend for.
    std::shared_ptr<CachedBlob> openBlob(const rafs::Bootstrap& bootstrap, const rafs::BootstrapBlob& blob,
                                         std::optional<BlobDescriptor> descriptor,
                                         const std::shared_ptr<Backend>& backend, const std::string& fscache_volume,
                                         bool taking_over, const ProbedSizes& probed);
    // The key of a blob's cache in blobs_ and to the collector: per fscache volume, or the blob id.
    static std::string blobKey(const std::string& fscache_volume, const std::string& blob_id);
    std::vector<PrefetchChunk> prefetchTableChunks(const rafs::Bootstrap& bootstrap,
                                                   const std::vector<std::shared_ptr<CachedBlob>>& blobs) const;
    // The image is going (unmounted, or its mount failed): the fetcher no longer serves it, and the
    // queued prefetch of its blobs that no other mounted image uses is dropped.
    void forgetFetches(const Image& image);
    // The image's start trace, also written to the state dir (StartTrace.h).
    nlohmann::json saveTrace(const Image& image);
    void saveTraceOrLog(const Image& image);
    FanotifyEngine& fanotify();
    FscacheEngine& fscache();
    // Once the fscache engine exists: the collector may remove its volumes no image uses.
    void collectFscacheVolumes();
    // What a worker taking a fanotify mount over knows of it from the mount table.
    struct FanotifyTakeover {
        int superblock_watch = -1;  // MountRecord::superblock_watch
        bool detached = false;      // off its path, maybe still in use: into detached_
        std::vector<FileIdentity> cache_files = {};  // MountRecord::cache_files: checked
    };
    // mountOrReattach(request, true, takeover); if that fails, the mount is left to the next
    // worker: listed in unserved_, its kept files kept.
    nlohmann::json takeOver(const MountRequest& request, FanotifyTakeover takeover);
    // `reattach`: a mount the kernel still has, taken over.
    nlohmann::json mountOrReattach(const MountRequest& request, bool reattach, FanotifyTakeover takeover);
    // The engine a mount request gets: as asked, else the configured one; `auto` falls back to
    // fanotify when the fscache engine cannot start.
    EngineKind engineFor(const MountRequest& request, bool reattach);
    // The fanotify half of mountOrReattach: a new file-backed mount, or one taken over (at its
    // path, or detached).
    void mountFanotify(Image& image, const rafs::Image& opened, FanotifyTakeover takeover, bool reattach);
    // Queues the image's prefetch table, and its whole blobs where the cache holds them.
    void startPrefetch(const Image& image, const rafs::Bootstrap& bootstrap);
    // How an fscache image reaches the kernel: rafsd mounts it, a previous daemon's mount is taken
    // over, or the image is only registered and the user mounts it by hand.
    enum class FscacheAttach { Mount, Reattach, Register };
    // `fsid_derived`: the image's fsid is defaultFsid(bootstrap), which names the bootstrap's content.
    void mountFscache(Image& image, const rafs::Bootstrap& bootstrap, FscacheAttach how, bool fsid_derived);
    nlohmann::json blobStatus(const CachedBlob& blob) const;
    // What the mount table records of `image`.
    static MountRecord recordOf(const Image& image);
    // Rewrites the mount table (if kept) from images_, plus `adding` (about to be mounted).
    void saveMountTable(const Image* adding);
    // After a mount or unmount already happened: a failure only costs the failover, so it is logged
    // with what it costs.
    void saveMountTableOrLog(std::string_view consequence = "a restarted rafsd will not know the current mounts");
    // Takes the records `which` picks off unserved_, and with the last one the blobs kept for them
    // (unserved_blobs_). Returns how many went. mutex_ held.
    size_t eraseUnserved(const std::function<bool(const MountRecord&)>& which);
    // A record's superblock watch, if it is one of the inotify instance this worker adopted; else -1.
    int adoptedWatch(const MountRecord& r) const { return superblocks_adopted_ ? r.superblock_watch : -1; }
    // LayerStore::withdrawMarkers, a failure logged.
    void withdrawMarkersOrLog(const std::filesystem::path& mountpoint);
    // The fscache mount `r` lists, left by a rafsd killed whole: unmounted if it is still the one
    // listed (its fsid among the mount's options) and nothing holds it; else `error` says why.
    enum class LeftMount { Unmounted, InUse, NotListed };
    static LeftMount unmountLeftFscache(const MountRecord& r, int& error);
    // dropPageCache (ErofsFileMount.h), a failure logged.
    void dropPageCacheOrLog(const std::filesystem::path& mountpoint);
    // LayerStore::reinstateMarkers, a failure logged: the mount is served whatever podman sees.
    void reinstateMarkersOrLog(const std::filesystem::path& mountpoint);
    // Drops the kept cache-file fds of blobs no image uses any more.
    void dropUnusedKeptFds();
    // umount() of the image at `mountpoint` (canonical), mutex_ held.
    nlohmann::json umountLocked(const std::filesystem::path& mountpoint);
    // Forgets the images of detached_ whose superblock is gone.
    void releaseDetached();
    // Each image rafsd serves: images_, then detached_.
    template <typename Visit>
    void forEachImage(Visit&& visit) const {
        for (const Image& image : images_) visit(image);
        for (const Image& image : detached_) visit(image);
    }
    // Its entry in list and status.
    static nlohmann::json imageEntry(const Image& image, nlohmann::json blobs);
    // Flushes the cache state of `image`'s blobs, failures logged.
    static void flushOrLog(const Image& image);

    Config config_;
    // One mount or umount at a time (a mount lets go while it talks to its registry); guards the
    // tables below.
    std::mutex mutex_;
    std::set<std::filesystem::path> mounting_;  // mount points of mounts talking to their registry
    // Before the fetcher: its threads call the collector when the disk is full.
    std::unique_ptr<CacheCollector> collector_;
    std::unique_ptr<ChunkFetcher> fetcher_;
    std::unique_ptr<FanotifyEngine> fanotify_;
    std::unique_ptr<FscacheEngine> fscache_;
    std::shared_ptr<FscacheVolumes> fscache_volumes_;  // with fscache_; the collector holds it too
    std::unique_ptr<Prefetcher> prefetcher_;
    std::map<std::string, std::weak_ptr<CachedBlob>> blobs_;  // by blob id: shared across images
    std::map<std::string, std::weak_ptr<ObjectFd>> fscache_fds_;  // same keys: each fscache blob's object fd
    std::vector<Image> images_;
    // Unmounted, still read (Image::detached_as): served, in no mount table, until they are gone.
    std::vector<Image> detached_;
    // Mounts of a predecessor this worker could not take over (recoverMounts), still mounted: kept
    // in the mount table, with every kept file, for the next worker.
    std::vector<MountRecord> unserved_;
    // The mount table could not be read at the start (recoverMounts), now or by an earlier worker
    // (its copy kept aside is still there): the mounts it listed are unknown, so are the kept
    // files they need.
    bool table_unreadable_ = false;
    // While there are such mounts: the blobs of the cache files kept for them, in use.
    std::vector<std::unique_ptr<CacheCollector::Opening>> unserved_blobs_;
    // Layer store mounts a stop unmounted, and fscache mounts a dead rafsd left: listed in the
    // mount table until mounted again (remountAtStart), so that no crash meanwhile loses them.
    std::vector<MountRecord> remount_at_start_;
    bool shut_down_ = false;
    bool fscache_restore_ = false;  // the adopted device had a daemon die on it
    bool fscache_kept_ = false;     // the device is the supervisor's (useFscacheDevice)
    // fanotify failover: the cache files among the fds the supervisor keeps (useFanotifyGroup)
    std::optional<KeptCacheFiles> kept_files_;
    // Whether this service knows which mounts the kept cache files serve: at once for a group of
    // its own, after the takeover (recoverMounts, reattach) for an adopted one. Until then none is
    // unused: a worker that fails while starting (a metrics address taken) and drops them leaves
    // the next worker opening the cache files anew, marked, and its writes to them wait on its
    // own events for good.
    bool kept_files_known_ = true;
    bool fanotify_restore_ = false;  // the adopted group had a worker die on it
    bool superblocks_adopted_ = false;  // the engine watches with the kept inotify instance
    std::filesystem::path mount_table_;  // empty: not kept
    // Whether this service has read the table (recoverMounts) or mounted something since it was
    // given it: only then is its own list the table's content. A worker that fails while starting
    // (a metrics address taken) must not replace a predecessor's table with its empty list, or
    // the next worker finds no mount to take over.
    bool table_adopted_ = false;
    std::chrono::milliseconds fetch_delay_{0};
    std::shared_ptr<NetworkBackend> http_;  // backend.type http, once used
    std::map<std::string, std::shared_ptr<RegistryBackend>> registries_;  // by "host/repository"
    RegistryImages registry_images_;
};

}  // namespace rafsd
