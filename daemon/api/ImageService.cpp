#include "daemon/api/ImageService.h"

#include "format/BlobFile.h"
#include "format/BootstrapCheck.h"
#include "format/Digest.h"
#include "format/Error.h"
#include "format/FileIo.h"
#include "daemon/api/BackendProbe.h"
#include "daemon/api/KeptImageCopies.h"
#include "daemon/api/LayerStore.h"
#include "daemon/api/LocalBootstrap.h"
#include "daemon/api/MetricsText.h"
#include "daemon/api/StartTrace.h"
#include "daemon/core/DurableFile.h"
#include "daemon/api/MountInfo.h"
#include "daemon/api/NetworkBackends.h"
#include "daemon/backends/DelayedBackend.h"
#include "daemon/backends/LocalfsBackend.h"
#include "daemon/core/BlobCacheFiles.h"
#include "daemon/core/BlobMetaLoader.h"
#include "daemon/core/Concurrently.h"
#include "daemon/core/CacheDirRollback.h"
#include "daemon/core/Log.h"
#include "daemon/core/SparseCacheFile.h"
#include "daemon/engines/fanotify/ErofsFileMount.h"
#include "daemon/engines/fscache/FscacheCacheFile.h"
#include "daemon/engines/fscache/FscacheName.h"
#include "daemon/engines/fscache/FscacheVolumes.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

// The fscache engine's chunk maps, one dir per volume, in the cache dir (FscacheVolumes).
const fs::path kFscacheState = "fscache-state";

// On-demand cachefiles is usable when the device exists and its module supports the mode; the
// probe cannot bind without a daemon's cache dir, so existence of the device is the test here
// and `bind ondemand` (FscacheEngine::start) gives the precise error later.
bool fscacheAvailable() { return ::access(FscacheDevice::kPath, F_OK) == 0; }

// blobs_'s key of an fscache blob: its cache file is the kernel's object in one volume.
std::string fscacheBlobKey(const std::string& volume, const std::string& blob_id) {
    return "fscache:" + volume + "/" + blob_id;
}

// The default fsid: stable for a bootstrap, so a remount finds its cache files again.
std::string defaultFsid(const rafs::Bootstrap& bootstrap) {
    return "rafs-" + rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bootstrap.bytes())).substr(0, 32);
}

CachePolicy cachePolicy(const Config::Cache& cache) {
    const auto percent = [&](uint32_t p) {
        return cache.max_size / 100 * p + cache.max_size % 100 * p / 100;
    };
    return {cache.max_size, percent(cache.high_watermark), percent(cache.low_watermark), cache.keep_recent};
}

void checkFscacheName(std::string_view what, const std::string& name) {
    if (!validFscacheName(name)) rafs::fail("{} '{}' is not a name of {}", what, name, kFscacheNameRule);
}

}  // namespace

ImageService::ImageService(Config config)
    : config_(std::move(config)), registry_images_(config_.daemon.state_dir / "images") {
    FetchOptions fetch;
    fetch.amplify = config_.fetch.amplify;
    fetch.threads = config_.fetch.max_inflight;
    fetch.retries = config_.fetch.retries;
    fetch.decoders = config_.fetch.workers;
    fetcher_ = std::make_unique<ChunkFetcher>(fetch);
    collector_ = std::make_unique<CacheCollector>(config_.daemon.cache_dir, cachePolicy(config_.cache), *fetcher_,
                                                  std::vector<fs::path>{registry_images_.dir()});
    collector_->addLayout(std::make_shared<BlobCacheFiles>(config_.daemon.cache_dir));
    const std::chrono::seconds keep_recent(config_.cache.keep_recent);
    collector_->addLayout(std::make_shared<ExtractedBootstraps>(config_.daemon.cache_dir, keep_recent));
    collector_->addLayout(std::make_shared<KeptImageCopies>(registry_images_, config_.daemon.state_dir, keep_recent));
    fetcher_->onNoSpace([collector = collector_.get()] { return collector->freeForWrite(); });
    if (config_.prefetch.enable) {
        prefetcher_ = std::make_unique<Prefetcher>(*fetcher_, config_.prefetch.bandwidth, config_.fetch.amplify,
                                                   std::max<size_t>(1, config_.fetch.max_inflight / 2));
    }
}

ImageService::~ImageService() { shutdown(); }

EngineKind ImageService::resolveEngine(EngineKind requested) {
    if (requested == EngineKind::Fscache) {
        if (!fscacheAvailable()) {
            rafs::fail("{}: CONFIG_CACHEFILES missing or module not loaded (modprobe cachefiles)",
                       FscacheDevice::kPath);
        }
        return EngineKind::Fscache;
    }
    if (requested == EngineKind::Auto && fscacheAvailable()) return EngineKind::Fscache;
    FanotifyEngine::checkKernel();
    return EngineKind::Fanotify;
}

FanotifyEngine& ImageService::fanotify() {
    if (!fanotify_) {
        fanotify_ = std::make_unique<FanotifyEngine>(*fetcher_, std::chrono::microseconds(config_.daemon.busy_poll_us));
    }
    if (!fanotify_->running()) fanotify_->start();
    return *fanotify_;
}

void ImageService::useFanotifyGroup(KeptFds& kept, bool restore) {
    std::lock_guard lock(mutex_);
    if (fanotify_) rafs::fail("the fanotify engine already has a group");
    const int group = kept.find(kKeptGroup);
    const int journal = kept.find(kKeptJournal);
    if (group < 0 || journal < 0) rafs::fail("no kept fanotify group and journal to serve");
    auto engine = std::make_unique<FanotifyEngine>(*fetcher_, std::chrono::microseconds(config_.daemon.busy_poll_us));
    engine->adopt(rafs::UniqueFd::duplicate(group, "the kept fanotify group"),
                  PendingJournal::adopt(rafs::UniqueFd::duplicate(journal, "the kept fanotify journal")));
    // The watches on the mounts' superblocks outlive a worker with it (rafsd before this one kept none).
    if (const int watches = kept.find(kKeptSuperblocks); watches >= 0) {
        engine->adoptSuperblockWatch(rafs::UniqueFd::duplicate(watches, "the kept inotify instance"));
        superblocks_adopted_ = true;
    } else if (engine->superblockWatchFd() >= 0) {
        kept.keep(kKeptSuperblocks, engine->superblockWatchFd());
    }
    fanotify_ = std::move(engine);
    kept_files_.emplace(kept);
    kept_files_known_ = !restore;
    fanotify_restore_ = restore;
}

void ImageService::startFanotify() {
    std::lock_guard lock(mutex_);
    fanotify();
    startCollecting();
}

// Not before the mounts a previous worker left are taken over: until then their blobs are open
// nowhere, and their files look unused to the collector.
void ImageService::startCollecting() { collector_->start(std::chrono::seconds(config_.cache.gc_interval)); }

FscacheEngine& ImageService::fscache() {
    if (!fscache_) {
        auto engine = std::make_unique<FscacheEngine>(*fetcher_);
        // A subdirectory: cachefiles owns its tree, and rafsd keeps its own state next to it.
        engine->start(config_.daemon.cache_dir / "fscache", "rafsd");
        fscache_ = std::move(engine);
        collectFscacheVolumes();
    }
    return *fscache_;
}

void ImageService::useFscacheDevice(FscacheDevice device, bool restore) {
    std::lock_guard lock(mutex_);
    if (fscache_) rafs::fail("the fscache engine already has a device");
    auto engine = std::make_unique<FscacheEngine>(*fetcher_);
    engine->adopt(std::move(device));
    fscache_ = std::move(engine);
    fscache_restore_ = restore;
    fscache_kept_ = true;
    collectFscacheVolumes();
}

void ImageService::collectFscacheVolumes() {
    const fs::path& dir = config_.daemon.cache_dir;
    fscache_volumes_ = std::make_shared<FscacheVolumes>(dir / "fscache", dir / kFscacheState, *fscache_);
    collector_->addLayout(fscache_volumes_);
}

void ImageService::startFscache() {
    std::lock_guard lock(mutex_);
    fscache().start(fscache_restore_);
    startCollecting();
}

registry::ImageReference ImageService::registryReference(const std::string& image) {
    registry::ImageReference reference;
    try {
        reference = registry::ImageReference::parse(image);
    } catch (const rafs::Error& e) {
        rafs::fail("{}: no such file, and not an image reference ({})", image, e.what());
    }
    if (reference.kind != registry::ImageReference::Kind::Registry) {
        rafs::fail("image {}: rafsd mounts images from registries only", image);
    }
    return reference;
}

std::shared_ptr<RegistryBackend> ImageService::registryBackend(const std::string& host, const std::string& repository) {
    auto& backend = registries_[host + "/" + repository];
    if (!backend) backend = makeRegistryBackend(config_.backend, host, repository);
    return backend;
}

std::vector<NetworkBackend*> ImageService::networkBackends() const {
    std::vector<NetworkBackend*> backends;
    if (http_) backends.push_back(http_.get());
    for (const auto& [name, backend] : registries_) backends.push_back(backend.get());
    return backends;
}

std::shared_ptr<Backend> ImageService::backendFor(const MountRequest& request, const registry::ImageReference* image) {
    std::shared_ptr<Backend> backend;
    if (request.blob_dir) {
        backend = std::make_shared<LocalfsBackend>(*request.blob_dir);
    } else if (image != nullptr) {
        backend = registryBackend(*image);
    } else if (config_.backend.type == Config::BackendType::Localfs) {
        backend = std::make_shared<LocalfsBackend>(config_.backend.localfs.dir);
    } else if (config_.backend.type == Config::BackendType::Registry) {
        backend = registryBackend(config_.backend.registry.host, config_.backend.registry.repo);
    } else {
        if (!http_) http_ = makeHttpBackend(config_.backend);
        backend = http_;
    }
    if (fetch_delay_.count() > 0) backend = std::make_shared<DelayedBackend>(std::move(backend), fetch_delay_);
    return backend;
}

std::string ImageService::blobKey(const std::string& fscache_volume, const std::string& blob_id) {
    return fscache_volume.empty() ? blob_id : fscacheBlobKey(fscache_volume, blob_id);
}

std::shared_ptr<CachedBlob> ImageService::openBlob(const rafs::Bootstrap& bootstrap, const rafs::BootstrapBlob& blob,
                                                   std::optional<BlobDescriptor> loaded,
                                                   const std::shared_ptr<Backend>& backend,
                                                   const std::string& fscache_volume, bool taking_over,
                                                   const ProbedSizes& probed) {
    const std::string key = blobKey(fscache_volume, blob.id);
    const fs::path& dir = config_.daemon.cache_dir;
    if (auto existing = blobs_[key].lock()) {
        // Shared only with an image that describes the blob's chunks the same way: what one
        // image's digests vouched for is right for another only then.
        const BlobDescriptor descriptor = loaded ? std::move(*loaded) : loadBlobDescriptor(bootstrap, blob, *backend, dir);
        if (descriptor.fingerprint() != existing->descriptor().fingerprint()) {
            rafs::fail("blob {}: a mounted image describes its chunks otherwise (other chunk digests or places); "
                       "an image naming a blob it does not hold cannot share its cache",
                       blob.id);
        }
        return existing;
    }
    // From here its files are in use: the collector leaves them alone.
    CacheCollector::Opening opening(*collector_, key);
    BlobDescriptor descriptor = loaded ? std::move(*loaded) : loadBlobDescriptor(bootstrap, blob, *backend, dir);
    std::unique_ptr<CacheFile> file;
    fs::path state_dir = dir;
    if (fscache_volume.empty()) {
        const fs::path path = BlobCacheFiles::dataFile(dir, blob.id);
        const int kept_fd = kept_files_ ? kept_files_->find(blob.id) : -1;
        if (kept_fd >= 0) {
            // The fd a dead worker wrote through: a file opened now, after its mark, would raise
            // events for our own writes.
            file = SparseCacheFile::adopt(path, rafs::UniqueFd::duplicate(kept_fd, path.string()), blob.uncompressed_size);
        } else {
            auto sparse = SparseCacheFile::open(path, blob.uncompressed_size);
            if (kept_files_) kept_files_->keep(blob.id, sparse->fd());
            file = std::move(sparse);
        }
    } else {
        state_dir = dir / kFscacheState / fscache_volume;
        std::error_code ec;
        fs::create_directories(state_dir, ec);
        if (ec) rafs::fail("cannot create {}: {}", state_dir.string(), ec.message());
        auto object_fd = std::make_shared<ObjectFd>();
        fscache_fds_[key] = object_fd;
        file = std::make_unique<FscacheCacheFile>(blob.id, blob.uncompressed_size, std::move(object_fd));
    }
    auto bitmap = ReadinessBitmap::open(state_dir / (blob.id + ".chunkmap"), blob.id, blob.chunk_count,
                                        blob.uncompressed_size, descriptor.fingerprint());
    if (bitmap.discarded()) log::warn("blob {}: cache state discarded: {}", blob.id, bitmap.discardReason());
    if (!fscache_volume.empty() && !taking_over && bitmap.count() == 0) fscache_volumes_->cullBlob(fscache_volume, blob.id);
    std::vector<ChunkExtent> extents;
    extents.reserve(descriptor.chunks.size());
    for (const auto& c : descriptor.chunks) extents.push_back({c.uncompressed_offset, c.uncompressed_size});
    auto cache = std::make_unique<BlobCache>(std::move(file), std::move(bitmap), std::move(extents));
    if (cache->droppedAtOpen() != 0) {
        log::warn("blob {}: {} chunks marked present had no data in the cache file; they will be fetched again",
                  blob.id, cache->droppedAtOpen());
    }
    // Every mount, also when the cache dir has the chunk table: a backend without the blob would
    // otherwise show only as an error on every read. A complete cache needs no backend at all, and
    // a mount taken over serves what is cached even while the backend is unreachable.
    if (!cache->complete() && !taking_over) checkBackendHas(*backend, descriptor, probed);
    auto cached = std::make_shared<CachedBlob>(std::move(descriptor), std::move(cache), backend);
    blobs_[key] = cached;
    opening.done(cached);
    return cached;
}

std::vector<PrefetchChunk> ImageService::prefetchTableChunks(
    const rafs::Bootstrap& bootstrap, const std::vector<std::shared_ptr<CachedBlob>>& blobs) const {
    std::vector<PrefetchChunk> chunks;
    // Each inode once: a table may name one twice, or a directory and files in it, and a file may
    // be linked many times; walking each again would cost the whole subtree every time.
    std::unordered_set<uint64_t> added;
    auto add = [&](const rafs::Inode& inode) {
        if (!added.insert(inode.nid).second) return;
        for (const rafs::InodeChunk& c : inode.chunks) {
            if (c.blob_index < blobs.size()) chunks.push_back({blobs[c.blob_index], c.ci_index});
        }
    };
    std::unordered_set<uint32_t> tabled;
    for (uint32_t nid : bootstrap.prefetchNids()) {
        if (!tabled.insert(nid).second) continue;
        rafs::Inode inode = bootstrap.inode(nid);
        if (inode.isDir()) {
            bootstrap.inodes().walk(nid, [&](const std::string&, const rafs::Inode& child) {
                if (child.isReg()) add(child);
            });
        } else if (inode.isReg()) {
            add(inode);
        }
    }
    return chunks;
}

nlohmann::json ImageService::mount(const MountRequest& request) {
    nlohmann::json mounted = mountOrReattach(request, false, {});
    // A mount anew where a predecessor's is gone (rafsd mount after its mount went): the kept
    // files are that one's, unused now.
    std::lock_guard lock(mutex_);
    if (!kept_files_known_) {
        kept_files_known_ = true;
        dropUnusedKeptFds();
    }
    return mounted;
}

nlohmann::json ImageService::reattach(const MountRequest& request) {
    if (request.engine == EngineKind::Fanotify) {
        if (!fanotify_) rafs::fail("reattach {}: no adopted fanotify group", request.mountpoint.string());
    } else if (!fscache_) {
        rafs::fail("reattach {}: no adopted {}", request.mountpoint.string(), FscacheDevice::kPath);
    }
    if (!hasErofsMount(request.mountpoint)) rafs::fail("reattach: {} is not an EROFS mount", request.mountpoint.string());
    nlohmann::json reattached = takeOver(request, {});
    std::lock_guard lock(mutex_);
    kept_files_known_ = true;
    return reattached;
}

nlohmann::json ImageService::takeOver(const MountRequest& request, FanotifyTakeover takeover) {
    try {
        return mountOrReattach(request, true, takeover);
    } catch (...) {
        // Still mounted, and served by no one: it stays listed, and its files kept (as opened
        // before they were marked), for the next worker, which may succeed. A failing worker that
        // dropped them would leave its successor writing through fds opened after the marks,
        // whose writes wait for events only it can answer.
        MountRecord r{std::string(engineName(request.engine.value_or(EngineKind::Fscache))), request.bootstrap,
                      request.mountpoint, request.fsid.value_or(""), request.domain_id.value_or(""), request.blob_dir};
        if (request.image) {
            const registry::ImageReference pinned = registry::ImageReference::parse(*request.image);
            r.image = *request.image;
            r.manifest_digest = pinned.digest;
        }
        r.register_only = request.register_only;
        r.layer_store = request.layer_store;
        r.detached = takeover.detached;
        r.superblock_watch = takeover.superblock_watch;
        r.cache_files = takeover.cache_files;
        std::lock_guard lock(mutex_);
        if (request.engine == EngineKind::Fanotify) fanotify_->leaveUnserved(request.mountpoint);
        unserved_.push_back(std::move(r));
        throw;
    }
}

EngineKind ImageService::engineFor(const MountRequest& request, bool reattach) {
    const EngineKind requested = reattach ? request.engine.value_or(EngineKind::Fscache)
                                          : request.engine.value_or(config_.daemon.engine);
    // Before the engine is looked at: whatever the kernel has, this request cannot be made.
    if (request.register_only && requested == EngineKind::Fanotify) {
        rafs::fail("register only: needs the fscache engine; a fanotify mount is made by rafsd itself");
    }
    if (reattach) return requested;
    // An fsid names an fscache cookie, for `mount -o fsid=`: a fanotify mount has none, and a
    // user who chose one would look for it in vain.
    const auto fanotifyMount = [&] {
        if (request.fsid || request.domain_id) {
            rafs::fail("--fsid and --domain-id name fscache cookies; this mount uses the fanotify engine "
                       "(--engine fscache for them)");
        }
        return EngineKind::Fanotify;
    };
    const EngineKind engine = resolveEngine(requested);
    if (engine == EngineKind::Fanotify) return fanotifyMount();
    try {
        fscache();
        return engine;
    } catch (const std::exception& e) {
        if (requested != EngineKind::Auto || request.register_only) throw;
        log::info("fscache engine unusable ({}); trying fanotify", e.what());
        FanotifyEngine::checkKernel();
        return fanotifyMount();
    }
}

nlohmann::json ImageService::mountOrReattach(const MountRequest& request, bool reattach, FanotifyTakeover takeover) {
    const bool detached = takeover.detached;
    std::unique_lock lock(mutex_);
    if (shut_down_) rafs::fail("rafsd is shutting down");
    releaseDetached();
    const fs::path mountpoint = fs::weakly_canonical(request.mountpoint);
    // A detached mount has left its path, which may be another mount's now.
    if (!detached) {
        // Unmounted by hand (umount(8)) since: forgotten, or kept as detached if still read, as
        // rafsctl umount would, so that the path takes a new mount.
        const auto here = std::find_if(images_.begin(), images_.end(), [&](const Image& i) { return i.mountpoint == mountpoint; });
        std::error_code ec;
        if (here != images_.end() && !reattach && !here->register_only && fs::exists(mountpoint, ec) &&
            !hasErofsMount(mountpoint)) {
            umountLocked(mountpoint);
        }
        for (const Image& image : images_) {
            if (image.mountpoint == mountpoint) rafs::fail("{} is already mounted by rafsd", mountpoint.string());
        }
        if (mounting_.contains(mountpoint)) rafs::fail("{} is being mounted by rafsd", mountpoint.string());
        struct stat st {};
        if (::stat(mountpoint.c_str(), &st) != 0) rafs::failErrno("mountpoint " + mountpoint.string());
        if (!S_ISDIR(st.st_mode)) rafs::fail("mountpoint {} is not a directory", mountpoint.string());
    }
    // Registering mounts nothing: the path may still hold the user's mount of a dead rafsd.
    if (!reattach && !request.register_only) {
        if (auto source = erofsMountOn(mountpoint)) {
            rafs::fail("mountpoint {} already has an EROFS mount of {}; unmount it first", mountpoint.string(), *source);
        }
    }
    const EngineKind engine = engineFor(request, reattach);
    std::optional<registry::ImageReference> reference;
    if (request.image) {
        if (request.blob_dir) rafs::fail("image {}: its blobs are in its registry; a blob dir cannot be given", *request.image);
        reference = registryReference(*request.image);
    }
    auto backend = backendFor(request, reference ? &*reference : nullptr);
    // Not when taking over a mount the kernel still has: its cached data serves even while the
    // registry is unreachable, and refusing would leave the mount without a daemon.
    const bool probe = !reattach && !request.blob_dir && (reference || config_.backend.type != Config::BackendType::Localfs);
    const std::shared_ptr<RegistryBackend> registry = reference ? registryBackend(*reference) : nullptr;

    // The registry's round trips (manifest, bootstrap layer, blob probes) are made without the
    // lock, so that a slow or unreachable registry holds up no list, status, metrics scrape, umount
    // or other mount meanwhile; the mount point is reserved instead. What writes into the cache dir
    // (chunk tables, cache files) stays under the lock: CacheDirRollback counts on one at a time.
    if (!detached) mounting_.insert(mountpoint);
    lock.unlock();
    struct Reserved {
        ImageService& service;
        std::unique_lock<std::mutex>& lock;
        const fs::path& mountpoint;
        bool reserved;
        ~Reserved() {
            if (!lock.owns_lock()) lock.lock();
            if (reserved) service.mounting_.erase(mountpoint);
        }
    } reserved{*this, lock, mountpoint, !detached};
    std::optional<ProbedSizes> probed;
    RegistryImage stored;
    std::optional<CacheCollector::Opening> copy_in_use;  // until the mount table lists the image
    if (reference) {
        registry::RegistryStore store(registry->client());
        // The manifest names the blobs: they are probed while the bootstrap layer comes.
        stored = registry_images_.obtain(store, *reference, [&](const registry::RafsLayers& layers) {
            if (probe) probed = probeBlobs(*backend, layers.blobIds());
        });
        copy_in_use.emplace(*collector_, KeptImageCopies::inUseKey(stored.manifest_digest));
    }
    const fs::path bootstrap_path = reference ? stored.bootstrap : fs::absolute(request.bootstrap);
    // Either a bootstrap file or a Nydus blob with an inline bootstrap, whose own blob (the last
    // blob table entry) is that file whatever its name. A fanotify (file-backed) mount needs the
    // bootstrap as a file of its own: it is extracted into the cache dir.
    const bool checked = stored.fetched.has_value();
    rafs::Image opened = checked ? rafs::Image{std::move(stored.fetched->bootstrap), bootstrap_path.string(), false}
                                 : rafs::openImage(bootstrap_path.string());
    const rafs::Bootstrap& bootstrap = opened.bootstrap;
    // Before anything is created or mounted: the kernel and the engines trust this metadata. A
    // bootstrap fetched just now was checked before it was kept. Its chunk indexes are kept for the
    // check against the blobs' chunk tables, then dropped.
    rafs::BootstrapSummary summary = checked ? std::move(stored.fetched->summary) : rafs::checkBootstrap(bootstrap);
    if (probe && !probed) probed = probeBlobs(*backend, opened);
    const ProbedSizes sizes = probed.value_or(ProbedSizes{});
    lock.lock();
    if (shut_down_) rafs::fail("rafsd is shutting down");

    if (opened.inline_meta) {
        backend = std::make_shared<BlobFileBackend>(std::move(backend), bootstrap.blobs().back().id, bootstrap_path);
    }
    Image image;
    image.bootstrap = bootstrap_path;
    image.mountpoint = mountpoint;
    image.engine = engine;
    image.layer_store = request.layer_store;
    if (request.blob_dir) image.blob_dir = fs::absolute(*request.blob_dir);
    if (reference) {
        image.image = *request.image;
        image.manifest_digest = stored.manifest_digest;
    }
    std::string fscache_volume;
    bool fsid_derived = false;
    if (engine == EngineKind::Fscache) {
        image.register_only = request.register_only;
        const std::string derived = defaultFsid(bootstrap);
        image.fsid = request.fsid.value_or(derived);
        fsid_derived = image.fsid == derived;
        image.domain_id = request.domain_id.value_or("");
        checkFscacheName("fsid", image.fsid);
        if (!image.domain_id.empty()) checkFscacheName("domain_id", image.domain_id);
        fscache_volume = image.fscacheVolume();
    }
    // fscache: the volume's chunk maps are a level down (openBlob).
    CacheDirRollback cache_dir(config_.daemon.cache_dir,
                               fscache_volume.empty() ? std::vector<fs::path>{}
                                                      : std::vector<fs::path>{kFscacheState, kFscacheState / fscache_volume});
    try {
        const std::vector<rafs::BootstrapBlob>& blobs = bootstrap.blobs();
        // Each blob's chunk table may come over the network: all of them at once, one round trip
        // for the mount instead of one per blob. The collector leaves their files alone meanwhile.
        std::vector<std::unique_ptr<CacheCollector::Opening>> openings;
        for (const rafs::BootstrapBlob& blob : blobs) {
            openings.push_back(std::make_unique<CacheCollector::Opening>(*collector_, blobKey(fscache_volume, blob.id)));
        }
        // Also of blobs another mounted image has open: openBlob shares one only if it is described
        // the same way.
        std::vector<std::optional<BlobDescriptor>> descriptors(blobs.size());
        runConcurrently(blobs.size(), kMountRequestsInFlight, [&](size_t i) {
            descriptors[i] = loadBlobDescriptor(bootstrap, blobs[i], *backend, config_.daemon.cache_dir);
        });
        for (size_t i = 0; i < blobs.size(); ++i) {
            image.blobs.push_back(
                openBlob(bootstrap, blobs[i], std::move(descriptors[i]), backend, fscache_volume, reattach, sizes));
        }
    } catch (...) {
        image.blobs.clear();
        // A takeover keeps them: the kernel still has the mount, and its next try needs the files
        // as opened before they were marked (KeptFds.h).
        if (!reattach) dropUnusedKeptFds();
        throw;
    }
    std::vector<std::span<const rafs::BlobChunk>> ci_by_blob;
    for (const auto& blob : image.blobs) ci_by_blob.push_back(blob->descriptor().chunks);
    rafs::checkChunkIndexes(bootstrap, summary, ci_by_blob);
    summary = {};
    image.index = fetcher_->addImage(image.blobs);
    const FscacheAttach how = reattach ? FscacheAttach::Reattach
                              : request.register_only ? FscacheAttach::Register
                                                      : FscacheAttach::Mount;
    std::string mount_options;
    if (engine == EngineKind::Fscache) {
        mountFscache(image, bootstrap, how, fsid_derived);
        mount_options = FscacheEngine::mountOptions(image.fsid, image.domain_id);
    } else {
        mountFanotify(image, opened, takeover, reattach);
    }
    startPrefetch(image, bootstrap);
    const char* done = how == FscacheAttach::Reattach ? "reattached" : how == FscacheAttach::Register ? "registered" : "mounted";
    cache_dir.commit();
    log::info("{} {} on {}{} ({} blobs, engine {})", done, reference ? *request.image : bootstrap_path.string(),
              mountpoint.string(), detached ? " (unmounted, still in use)" : "", image.blobs.size(), engineName(engine));
    (detached ? detached_ : images_).push_back(std::move(image));
    // A mount a previous worker left unserved on this mount point was detached since (the
    // snapshotter does so) and the image is mounted anew: nothing is left unserved there.
    // So is a layer store image still to be mounted again there. (A reattach finds neither.)
    if (!reattach) {
        // Not a detached one's: off its path, it is no mount of this path.
        auto here = [&](const MountRecord& r) { return !r.detached && fs::weakly_canonical(r.mountpoint) == mountpoint; };
        const auto stale = eraseUnserved(here) + std::erase_if(remount_at_start_, here);
        if (stale != 0) saveMountTableOrLog();
    }
    nlohmann::json response = {{"mountpoint", mountpoint.string()}, {"engine", std::string(engineName(engine))}};
    if (how == FscacheAttach::Register) {
        response["mount_command"] = "mount -t erofs -o " + mount_options + " none " + mountpoint.string();
    }
    return response;
}

void ImageService::mountFanotify(Image& image, const rafs::Image& opened, FanotifyTakeover takeover, bool reattach) {
    const bool detached = takeover.detached;
    FanotifyMount spec;
    FanotifyEngine* engine_ptr = fanotify_.get();
    try {
        spec.image = image.index;
        spec.bootstrap = opened.inline_meta ? extractBootstrap(opened.bootstrap, config_.daemon.cache_dir) : image.bootstrap;
        spec.mountpoint = image.mountpoint;
        spec.keep_marks = config_.cache.max_size != 0;
        // Before the engine sees a blob complete and unmarks its file.
        if (!spec.keep_marks) {
            for (const auto& blob : image.blobs) blob->unmarkWhenComplete();
            if (!reattach && !detached) {
                spec.traced_complete_for = std::chrono::seconds(config_.trace.cached_blobs_for);
                if (spec.traced_complete_for.count() == 0) {
                    for (const auto& blob : image.blobs) {
                        if (blob->cache().complete()) image.untraced_blobs.push_back(blob->descriptor().id);
                    }
                }
            }
        }
        for (uint32_t i = 0; i < image.blobs.size(); ++i) {
            auto& file = dynamic_cast<SparseCacheFile&>(image.blobs[i]->cache().file());
            spec.blobs.push_back({i, file.path(), file.fd(), file.size(), image.blobs[i]->cache().complete()});
            const auto [dev, ino] = MarkedFiles::keyOf(file.fd(), file.path().native());
            image.cache_files.push_back({dev, ino});
        }
        // Marks on other files than the mount's (MountRecord::cache_files) would serve nothing.
        if (reattach && !takeover.cache_files.empty()) {
            if (takeover.cache_files.size() != image.cache_files.size()) {
                rafs::fail("the mount table lists {} cache files for it, its bootstrap {} blobs",
                           takeover.cache_files.size(), image.blobs.size());
            }
            for (size_t i = 0; i < image.blobs.size(); ++i) {
                if (takeover.cache_files[i] == image.cache_files[i]) continue;
                rafs::fail("blob {}: {} is not the cache file the mount reads (the cache dir changed, or the file "
                           "was removed or replaced since); what the mount has not cached reads as zeros: stop what "
                           "uses it and unmount it",
                           image.blobs[i]->descriptor().id, spec.blobs[i].path.string());
            }
        }
        spec.superblock_watch = takeover.superblock_watch;
        if (detached) {
            image.detached_as = fanotify_->reattachDetached(spec);
            image.superblock_watch = takeover.superblock_watch;
        } else if (reattach) {
            image.superblock_watch = fanotify_->reattach(spec);
        } else {
            engine_ptr = &fanotify();
            try {
                // Listed before it appears at its path, as for fscache (mountFscache), with
                // the watch that tells a successor whether it is gone once off its path.
                engine_ptr->mount(spec, [&](int superblock_watch) {
                    image.superblock_watch = superblock_watch;
                    saveMountTable(&image);
                });
            } catch (...) {
                saveMountTableOrLog();
                throw;
            }
        }
    } catch (...) {
        forgetFetches(image);
        image.blobs.clear();
        if (!reattach) dropUnusedKeptFds();
        throw;
    }
    if (!spec.keep_marks) {
        // The fd stays open as long as the blob, which owns the callback (CachedBlob).
        for (uint32_t i = 0; i < image.blobs.size(); ++i) {
            image.blobs[i]->onComplete([engine_ptr, fd = spec.blobs[i].fd] { engine_ptr->unmarkComplete(fd); });
        }
    }
}

void ImageService::startPrefetch(const Image& image, const rafs::Bootstrap& bootstrap) {
    if (!prefetcher_) return;
    // Whole blobs only if they fit a bounded cache: beyond it the collector would free what
    // prefetch fetched, and the link would carry the image for nothing.
    uint64_t size = 0;
    for (const auto& blob : image.blobs) size += blob->descriptor().uncompressed_size;
    const bool whole = config_.cache.max_size == 0 || size <= collector_->policy().low;
    prefetcher_->add(prefetchTableChunks(bootstrap, image.blobs),
                     whole ? image.blobs : std::vector<std::shared_ptr<CachedBlob>>{});
}

void ImageService::mountFscache(Image& image, const rafs::Bootstrap& bootstrap, FscacheAttach how, bool fsid_derived) {
    try {
        FscacheMount spec;
        spec.image = image.index;
        spec.fsid = image.fsid;
        spec.domain_id = image.domain_id;
        spec.bootstrap = bootstrap.bytes();
        spec.mountpoint = image.mountpoint;
        for (uint32_t i = 0; i < image.blobs.size(); ++i) {
            const BlobDescriptor& d = image.blobs[i]->descriptor();
            spec.blobs.push_back(
                {i, d.id, d.uncompressed_size, fscache_fds_.at(fscacheBlobKey(image.fscacheVolume(), d.id)).lock()});
            // The kernel reads what its cache file holds without asking.
            if (how != FscacheAttach::Reattach && image.blobs[i]->cache().bitmap().count() > 0) {
                image.untraced_blobs.push_back(d.id);
            }
        }
        FscacheEngine& engine = fscache();
        if (how == FscacheAttach::Reattach) {
            engine.reattach(spec);
        } else {
            engine.start(fscache_restore_);
            for (const Image& other : images_) {
                if (other.engine == EngineKind::Fscache && other.fsid == image.fsid && other.domain_id == image.domain_id) {
                    rafs::fail("fsid {} is the fsid of the image on {} already", image.fsid, other.mountpoint.string());
                }
            }
            // A dead rafsd's mount, still in use: its superblock holds the fsid's cookies until it
            // is unmounted, and mount(2) would say only EBUSY.
            for (const auto* records : {&unserved_, &remount_at_start_}) {
                for (const MountRecord& left : *records) {
                    if (left.engine == engineName(EngineKind::Fscache) && left.fsid == image.fsid &&
                        left.domain_id == image.domain_id && erofsMountWithOption(left.mountpoint, "fsid=" + left.fsid)) {
                        rafs::fail("fsid {} is the fsid of the image a rafsd that died left mounted on {}, still in "
                                   "use: unmount it first, or mount under another --fsid", image.fsid,
                                   left.mountpoint.string());
                    }
                }
            }
            // A derived fsid names the bootstrap's content, so a cache file kept under it holds this one.
            if (!fsid_derived) fscache_volumes_->cullBootstrap(image.fscacheVolume(), image.fsid);
            // Listed before mount(2): a daemon dying during the mount leaves an entry the next one
            // finds unmounted and forgets, never a mount it does not know about. A registered
            // image is listed too, so that a restarted daemon takes over the user's mount of it.
            saveMountTable(&image);
            try {
                if (how == FscacheAttach::Register) engine.reattach(spec);
                else engine.mount(spec);
            } catch (...) {
                saveMountTableOrLog();
                throw;
            }
        }
    } catch (...) {
        forgetFetches(image);
        throw;
    }
}

MountRecord ImageService::recordOf(const Image& i) {
    return {std::string(engineName(i.engine)), i.bootstrap, i.mountpoint, i.fsid, i.domain_id, i.blob_dir,
            i.image, i.manifest_digest, i.register_only, i.layer_store, false, !i.detached_as.empty(), i.superblock_watch,
            i.cache_files};
}

void ImageService::saveMountTable(const Image* adding) {
    if (mount_table_.empty()) return;
    if (adding != nullptr) table_adopted_ = true;
    if (!table_adopted_) return;
    std::vector<MountRecord> records;
    forEachImage([&](const Image& i) { records.push_back(recordOf(i)); });
    if (adding != nullptr) records.push_back(recordOf(*adding));
    records.insert(records.end(), unserved_.begin(), unserved_.end());
    records.insert(records.end(), remount_at_start_.begin(), remount_at_start_.end());
    saveMounts(mount_table_, records);
}

void ImageService::withdrawMarkersOrLog(const fs::path& mountpoint) {
    try {
        LayerStore::withdrawMarkers(mountpoint);
    } catch (const std::exception& e) {
        log::error("{}: podman may take its layers while they are not mounted: {}", mountpoint.string(), e.what());
    }
}

void ImageService::dropPageCacheOrLog(const fs::path& mountpoint) {
    if (const size_t failed = dropPageCache(mountpoint); failed != 0) {
        log::warn("{}: the page cache of {} files (or a part of its tree) could not be dropped; zeros read meanwhile "
                  "may stay",
                  mountpoint.string(), failed);
    }
}

void ImageService::reinstateMarkersOrLog(const fs::path& mountpoint) {
    try {
        LayerStore::reinstateMarkers(mountpoint);
    } catch (const std::exception& e) {
        log::error("{}: served again, but podman will not see its layers: {}", mountpoint.string(), e.what());
    }
}

size_t ImageService::eraseUnserved(const std::function<bool(const MountRecord&)>& which) {
    const size_t erased = std::erase_if(unserved_, which);
    if (unserved_.empty()) unserved_blobs_.clear();
    return erased;
}

void ImageService::saveMountTableOrLog(std::string_view consequence) {
    try {
        saveMountTable(nullptr);
    } catch (const std::exception& e) {
        log::error("{}; {}", e.what(), consequence);
    }
}

void ImageService::dropUnusedKeptFds() {
    // The blobs of a mount this worker could not take over are not known here, nor those of the
    // mounts an unreadable table listed: nothing is dropped. A later worker taking such a mount
    // over needs the files as opened before they were marked (KeptFds.h).
    if (!kept_files_ || !kept_files_known_ || !unserved_.empty() || table_unreadable_) return;
    for (const std::string& blob_id : kept_files_->blobIds()) {
        const auto it = blobs_.find(blob_id);
        if (it == blobs_.end() || it->second.expired()) kept_files_->drop(blob_id);
    }
}

namespace {

// The request that mounts (or takes over) what `r` records.
MountRequest requestOf(const MountRecord& r) {
    MountRequest request;
    request.bootstrap = r.bootstrap;
    request.mountpoint = r.mountpoint;
    request.blob_dir = r.blob_dir;
    if (!r.image.empty()) {
        // The manifest it was mounted with, wherever the tag points now: its bootstrap is
        // the one the kernel has mounted, and the state dir keeps it.
        registry::ImageReference pinned = registry::ImageReference::parse(r.image);
        pinned.digest = r.manifest_digest;
        request.image = pinned.str();
    }
    const bool fanotify = r.engine == engineName(EngineKind::Fanotify);
    request.engine = fanotify ? EngineKind::Fanotify : EngineKind::Fscache;
    if (!fanotify) request.fsid = r.fsid;
    if (!r.domain_id.empty()) request.domain_id = r.domain_id;
    request.register_only = r.register_only;
    request.layer_store = r.layer_store;
    return request;
}

}  // namespace

ImageService::LeftMount ImageService::unmountLeftFscache(const MountRecord& r, int& error) {
    // Somebody else's mount since: not ours to touch.
    if (!erofsMountWithOption(r.mountpoint, "fsid=" + r.fsid)) return LeftMount::NotListed;
    if (::umount2(r.mountpoint.c_str(), UMOUNT_NOFOLLOW) == 0) return LeftMount::Unmounted;
    error = errno;
    return LeftMount::InUse;
}

void ImageService::recoverMounts() {
    if (mount_table_.empty()) return;
    table_adopted_ = true;
    std::vector<MountRecord> records;
    fs::path aside = mount_table_;
    aside += ".unreadable";
    std::error_code exists_ec;
    table_unreadable_ = fs::exists(aside, exists_ec);
    try {
        records = loadMounts(mount_table_);
    } catch (const rafs::SystemError& e) {
        // Not read (EIO, EACCES), which says nothing of its content: left where it is.
        table_unreadable_ = true;
        log::error("{}; the mounts it lists cannot be taken over: unmount them by hand", e.what());
    } catch (const std::exception& e) {
        // Refusing to start would not save those mounts either; new ones can still be served. The
        // table is kept aside, not overwritten by the next save: the operator's one record of
        // which mounts (still up, their unread bytes failing or reading as zeros) need unmounting
        // by hand; its kept files stay until it is removed.
        table_unreadable_ = true;
        std::error_code ec;
        fs::rename(mount_table_, aside, ec);
        log::error("{}; the mounts it lists cannot be taken over, and what they have not cached fails or reads as "
                   "zeros: {}; unmount them by hand, then remove it",
                   e.what(), ec ? fmt::format("it could not be kept aside ({})", ec.message()) : "kept as " + aside.string());
    }
    std::vector<MountRecord> registered;
    std::vector<MountRecord> remounts;
    for (const MountRecord& r : records) {
        try {
            const bool fanotify = r.engine == engineName(EngineKind::Fanotify);
            const bool mounted = !r.detached && hasErofsMount(r.mountpoint);
            // A watch the previous worker made is known only in the instance it made it in.
            const int watch = adoptedWatch(r);
            if (r.mount_again) {
                // Left failing by a rafsd killed whole (below), whatever device this worker has:
                // the mount's cache went with the dead one's. Mounted again once it is unmounted.
                int error = 0;
                if (mounted && unmountLeftFscache(r, error) == LeftMount::Unmounted) {
                    log::info("{}: unmounted, to be mounted again", r.mountpoint.string());
                }
                remounts.push_back(r);
                continue;
            }
            if (fanotify && !mounted) {
                // Off its path (unmounted through rafsd, or by hand), maybe still read: taken over
                // while the previous worker's watch says its superblock lives; without a watch, if
                // rafsd knew it was in use, until the stop fills its files. (On a new group it
                // reads without rafsd already.) Not as a layer store's mount: its path gets one
                // again, as for any layer store image found unmounted.
                if (fanotify_ && fanotify_restore_ && (watch >= 0 ? !fanotify_->superblockGone(watch) : r.detached)) {
                    if (r.layer_store && !r.detached) remounts.push_back(r);
                    MountRequest off_path = requestOf(r);
                    off_path.layer_store = false;
                    takeOver(off_path, {watch, true, r.cache_files});
                    continue;
                }
                if (r.detached) continue;
            }
            if (!mounted && r.layer_store) {
                // After a crash (a stop withdraws them): no container may start on the empty diff.
                withdrawMarkersOrLog(r.mountpoint);
                remounts.push_back(r);
                continue;
            }
            // Registered for a mount by hand that is not there (yet): registered again, after
            // every mount is taken over (registering starts the engine, whose restore makes the
            // kernel resend the requests of those mounts). Only on a device taken over: a fresh
            // one starts clean, as after a reboot.
            if (!mounted && !fanotify && r.register_only && fscache_ && fscache_restore_) {
                registered.push_back(r);
                continue;
            }
            if (!mounted) {
                log::info("{}: listed in {} but no longer mounted; forgotten", r.mountpoint.string(),
                          mount_table_.string());
                continue;
            }
            const bool restored = fanotify ? fanotify_ && fanotify_restore_ : fscache_ && fscache_restore_;
            if (!restored && fanotify && fanotify_) {
                // Every holder of its group died at once (no fd store): the kernel let each read of
                // a hole through since. The mount's backing files were opened while marked, so they
                // raise events for this worker's new group once it marks them, like a new mount's.
                takeOver(requestOf(r), {watch, false, r.cache_files});
                log::warn("{}: its fanotify group died with every rafsd process that held it, and reads of what was "
                          "not cached read zeros since; taken over by this rafsd's group",
                          r.mountpoint.string());
                dropPageCacheOrLog(r.mountpoint);
                if (r.layer_store) reinstateMarkersOrLog(r.mountpoint);
                continue;
            }
            if (!restored && !fanotify) {
                // Its cookies were the dead daemon's cache, gone with its fd: the kernel fails its
                // reads (EIO, or ENOBUFS) for good, and only a new mount can be served. One mounted
                // by hand (registered only) is the user's to mount again; it is registered anew.
                if (r.register_only) {
                    log::warn("{}: mounted by hand for a rafsd whose {} is gone, so its reads fail; registered "
                              "again: unmount it and mount it again",
                              r.mountpoint.string(), FscacheDevice::kPath);
                    registered.push_back(r);
                    continue;
                }
                // Mounted again at start (remountAtStart), listed until then: the kernel refuses a
                // second superblock of its fsid while this one lives, which a file open there or a
                // container's overlay keeps alive even once it is off its path.
                int error = 0;
                const LeftMount left = unmountLeftFscache(r, error);
                if (left == LeftMount::NotListed) {
                    log::info("{}: the EROFS mount there is not the one listed (fsid {}); forgotten",
                              r.mountpoint.string(), r.fsid);
                    continue;
                }
                const bool unmounted = left == LeftMount::Unmounted;
                log::warn("{}: left mounted by a rafsd whose {} is gone, so its reads fail{}",
                          r.mountpoint.string(), FscacheDevice::kPath,
                          unmounted ? "; unmounted, to be mounted again"
                                    : fmt::format(", and in use ({}); once nothing uses it, unmount it: rafsd mounts "
                                                  "it again at its next start",
                                                  std::strerror(error)));
                if (r.layer_store) withdrawMarkersOrLog(r.mountpoint);
                MountRecord again = r;
                again.mount_again = true;
                remounts.push_back(std::move(again));
                continue;
            }
            if (!restored) {
                log::warn("{}: left mounted by a rafsd whose fanotify group is gone, so its reads see holes; unmount it",
                          r.mountpoint.string());
                if (r.layer_store) withdrawMarkersOrLog(r.mountpoint);
                continue;
            }
            takeOver(requestOf(r), {watch, false, r.cache_files});
            // Back after an earlier worker could not take it over (below).
            if (r.layer_store) reinstateMarkersOrLog(r.mountpoint);
        } catch (const std::exception& e) {
            log::error("{}: cannot take it over: {}", r.mountpoint.string(), e.what());
            // Served by no one until a worker can: podman must not take its layers meanwhile.
            if (r.layer_store) withdrawMarkersOrLog(r.mountpoint);
        }
    }
    // Listed in the table until remountAtStart() mounts them: the registrations below rewrite
    // it, and a crash meanwhile must lose none.
    {
        std::lock_guard lock(mutex_);
        remount_at_start_ = std::move(remounts);
    }
    for (const MountRecord& r : registered) {
        try {
            mount(requestOf(r));
        } catch (const std::exception& e) {
            log::error("{}: cannot register it again: {}", r.mountpoint.string(), e.what());
        }
    }
    std::lock_guard lock(mutex_);
    // Not fatal (a full state dir): the table on disk still lists every mount taken over, and a
    // worker ending here would leave them to workers that end the same way, readers waiting.
    saveMountTableOrLog("serving the mounts taken over all the same (the table on disk still lists them)");
    kept_files_known_ = true;
    dropUnusedKeptFds();
    // A mount left unserved keeps its blobs' files for the next worker. Which blobs those are is
    // known here only by the cache files the supervisor keeps: its bootstrap may be the very
    // thing that is missing.
    if (!unserved_.empty() && kept_files_) {
        for (const std::string& blob_id : kept_files_->blobIds()) {
            unserved_blobs_.push_back(std::make_unique<CacheCollector::Opening>(*collector_, blob_id));
        }
    }
}

size_t ImageService::retryUnserved() {
    const auto fanotifyMounted = [](const MountRecord& r) {
        return r.engine == engineName(EngineKind::Fanotify) && !r.detached;
    };
    std::vector<MountRecord> pending;
    {
        std::lock_guard lock(mutex_);
        if (shut_down_) return 0;
        std::copy_if(unserved_.begin(), unserved_.end(), std::back_inserter(pending), fanotifyMounted);
    }
    for (const MountRecord& r : pending) {
        const int watch = adoptedWatch(r);
        bool on_path = false;
        try {
            on_path = hasErofsMount(r.mountpoint);
            if (on_path) {
                mountOrReattach(requestOf(r), true, {watch, false, r.cache_files});
                log::info("{}: taken over, after no worker could", r.mountpoint.string());
                // If its group had died (recoverMounts), reads meanwhile saw zeros, which EROFS
                // may keep; otherwise they were denied, and this costs a few cold reads.
                dropPageCacheOrLog(r.mountpoint);
            } else if (watch >= 0 && !fanotify_->superblockGone(watch)) {
                // Unmounted since, still read (a container's overlay): served off its path until it
                // is gone, as recoverMounts takes such a mount over.
                MountRequest off_path = requestOf(r);
                off_path.layer_store = false;
                mountOrReattach(off_path, true, {watch, true, r.cache_files});
                log::info("{}: taken over off its path, after no worker could", r.mountpoint.string());
            } else {
                log::info("{}: no longer mounted; forgotten", r.mountpoint.string());
                if (r.layer_store) withdrawMarkersOrLog(r.mountpoint);
            }
        } catch (const std::exception& e) {
            log::warn("{}: still cannot take it over: {}", r.mountpoint.string(), e.what());
            continue;
        }
        if (r.layer_store && on_path) reinstateMarkersOrLog(r.mountpoint);
        std::lock_guard lock(mutex_);
        // A layer store image off its path gets it again at the next start (remountAtStart).
        if (r.layer_store && !on_path) remount_at_start_.push_back(r);
        eraseUnserved([&](const MountRecord& u) { return u == r; });
        saveMountTableOrLog();
        dropUnusedKeptFds();
    }
    std::lock_guard lock(mutex_);
    return static_cast<size_t>(std::count_if(unserved_.begin(), unserved_.end(), fanotifyMounted));
}

void ImageService::remountAtStart(const std::atomic<bool>& stopping) {
    std::vector<MountRecord> pending;
    {
        std::lock_guard lock(mutex_);
        pending = remount_at_start_;
    }
    for (const MountRecord& r : pending) {
        if (stopping.load()) return;
        const char* what = r.layer_store ? "layer store image" : "image";
        bool keep = false;
        try {
            if (hasErofsMount(r.mountpoint)) {
                // A dead rafsd's fscache mount, still in use: for a later start, once it is gone.
                keep = true;
                log::warn("{}: still mounted; the {} is mounted again at a start of rafsd once it is unmounted",
                          r.mountpoint.string(), what);
            } else {
                // Gone with the markers when the mount went; its store entry may be gone too.
                if (r.layer_store && !LayerStore::restoreMountpoint(r.mountpoint)) {
                    rafs::fail("its layer store entry is gone");
                }
                mount(requestOf(r));
                if (r.layer_store) reinstateMarkersOrLog(r.mountpoint);
                log::info("{}: {} mounted again", r.mountpoint.string(), what);
            }
        } catch (const std::exception& e) {
            // One that fails stays listed for the next start, unless its place is gone (a store
            // entry removed while rafsd was not running, a mount point deleted).
            std::error_code ec;
            keep = fs::is_directory(r.layer_store ? r.mountpoint.parent_path() : r.mountpoint, ec);
            if (!keep) {
                log::info("{}: {}; not mounted again", r.mountpoint.string(),
                          r.layer_store ? "the layer store entry is gone" : "the mount point is gone");
            } else if (r.layer_store) {
                withdrawMarkersOrLog(r.mountpoint);
                log::error("{}: cannot mount the layer store image again ({}); its entries are withdrawn, so podman "
                           "reports its layers missing, until a later start of rafsd mounts it", r.mountpoint.string(),
                           e.what());
            } else {
                log::error("{}: cannot mount the image again ({}); a later start of rafsd tries again",
                           r.mountpoint.string(), e.what());
            }
        }
        // A mount that worked took its record off already (mountOrReattach).
        std::lock_guard lock(mutex_);
        if (!keep && std::erase(remount_at_start_, r) != 0) saveMountTableOrLog();
    }
}

nlohmann::json ImageService::umount(const UmountRequest& request) {
    std::lock_guard lock(mutex_);
    releaseDetached();
    return umountLocked(fs::weakly_canonical(request.mountpoint));
}

nlohmann::json ImageService::umountLocked(const fs::path& mountpoint) {
    auto it = std::find_if(images_.begin(), images_.end(), [&](const Image& i) { return i.mountpoint == mountpoint; });
    if (it == images_.end()) {
        // One to be mounted again at a start (remountAtStart) is not, then.
        auto here = [&](const MountRecord& r) { return fs::weakly_canonical(r.mountpoint) == mountpoint; };
        if (std::erase_if(remount_at_start_, here) == 0) rafs::fail("{} is not mounted by rafsd", mountpoint.string());
        saveMountTableOrLog();
        log::info("{}: no longer mounted again at a start", mountpoint.string());
        return nlohmann::json::object();
    }
    std::optional<fs::path> detached_as;
    if (it->engine == EngineKind::Fscache) {
        fscache().umount(mountpoint);  // a copy still in use reads EIO from here on, never a hole
    } else {
        detached_as = fanotify().umount(mountpoint);
    }
    saveTraceOrLog(*it);
    if (it->layer_store) withdrawMarkersOrLog(mountpoint);
    nlohmann::json response = nlohmann::json::object();
    if (detached_as) {
        log::warn("unmounted {}, but it is still in use (lazily detached with a file open, or a copy in another "
                  "mount namespace): its files are served until it is gone",
                  mountpoint.string());
        it->detached_as = *detached_as;
        detached_.push_back(std::move(*it));
        response["still_in_use"] = true;
    } else {
        forgetFetches(*it);
        flushOrLog(*it);
        log::info("unmounted {}", mountpoint.string());
    }
    images_.erase(it);
    saveMountTableOrLog();
    dropUnusedKeptFds();
    return response;
}

void ImageService::releaseDetached() {
    if (!fanotify_ || detached_.empty()) return;
    const std::vector<fs::path> released = fanotify_->releaseDetached();
    if (released.empty()) return;
    for (const fs::path& name : released) {
        const auto it = std::find_if(detached_.begin(), detached_.end(), [&](const Image& i) { return i.detached_as == name; });
        if (it == detached_.end()) continue;
        forgetFetches(*it);
        flushOrLog(*it);
        log::info("{}: no longer in use", it->mountpoint.string());
        detached_.erase(it);
    }
    saveMountTableOrLog();  // a successor need not look at them again
    dropUnusedKeptFds();
}

void ImageService::flushOrLog(const Image& image) {
    for (const auto& blob : image.blobs) {
        try {
            blob->cache().flush();
        } catch (const std::exception& e) {
            log::error("blob {}: flushing cache state: {}", blob->descriptor().id, e.what());
        }
    }
}

nlohmann::json ImageService::saveTrace(const Image& image) {
    // The bootstrap file, or a Nydus blob whose bootstrap is inline.
    const rafs::Bootstrap bootstrap = rafs::openImage(image.bootstrap.string()).bootstrap;
    StartTrace trace = StartTrace::of(bootstrap, fetcher_->trace(image.index));
    trace.untraced_blobs = image.untraced_blobs;
    const std::string text = trace.text(image.image.empty() ? image.bootstrap.string() : image.image);
    const fs::path path = tracePath(config_.daemon.state_dir, bootstrap, image.manifest_digest);
    // A mount that read nothing (a warm cache the kernel reads without asking, a mount taken over
    // after its start) says nothing about the image's start, and one that could not see the reads
    // of some blobs less than a trace that saw all: an earlier trace is kept then.
    const auto keepEarlier = [&] {
        if (trace.paths.empty()) return fs::exists(path);
        if (trace.untraced_blobs.empty()) return false;
        std::string earlier;
        try {
            earlier = rafs::readFile(path.string(), 64u << 20);
        } catch (const rafs::Error&) {
            return false;  // none, or unreadable: replaced
        }
        return !StartTrace::leftBlobsOut(earlier);
    };
    if (keepEarlier()) {
        return {{"text", text}, {"files", trace.paths.size()}, {"chunks", trace.chunks}, {"saved", ""}};
    }
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec) rafs::fail("cannot create {}: {}", path.parent_path().string(), ec.message());
    replaceFileSynced(path, text);  // whole or not at all: mkrafs reads it as a prefetch list
    return {{"text", text}, {"files", trace.paths.size()}, {"chunks", trace.chunks}, {"saved", path.string()}};
}

void ImageService::forgetFetches(const Image& image) {
    if (prefetcher_) {
        // A blob another mounted image shares stays queued: it is that image's prefetch too.
        std::vector<std::shared_ptr<CachedBlob>> unshared;
        for (const auto& blob : image.blobs) {
            bool shared = false;
            forEachImage([&](const Image& other) {
                shared = shared || (&other != &image &&
                                    std::find(other.blobs.begin(), other.blobs.end(), blob) != other.blobs.end());
            });
            if (!shared) unshared.push_back(blob);
        }
        prefetcher_->forget(unshared);
    }
    fetcher_->removeImage(image.index);
}

void ImageService::saveTraceOrLog(const Image& image) {
    try {
        saveTrace(image);
    } catch (const std::exception& e) {
        log::warn("{}: start trace not saved: {}", image.mountpoint.string(), e.what());
    }
}

nlohmann::json ImageService::trace(const TraceRequest& request) {
    std::lock_guard lock(mutex_);
    const fs::path mountpoint = fs::weakly_canonical(request.mountpoint);
    auto it = std::find_if(images_.begin(), images_.end(), [&](const Image& i) { return i.mountpoint == mountpoint; });
    if (it == images_.end()) rafs::fail("{} is not mounted by rafsd", mountpoint.string());
    return saveTrace(*it);
}

nlohmann::json ImageService::imageEntry(const Image& i, nlohmann::json blobs) {
    nlohmann::json entry = {{"mountpoint", i.shownAt().string()},
                            {"bootstrap", i.bootstrap.string()},
                            {"engine", std::string(engineName(i.engine))},
                            {"blobs", std::move(blobs)}};
    if (!i.detached_as.empty()) entry["detached"] = true;
    if (!i.image.empty()) {  // mounted by reference: from what
        entry["image"] = i.image;
        entry["manifest"] = i.manifest_digest;
    }
    return entry;
}

nlohmann::json ImageService::list() {
    std::lock_guard lock(mutex_);
    releaseDetached();
    nlohmann::json images = nlohmann::json::array();
    forEachImage([&](const Image& i) { images.push_back(imageEntry(i, i.blobs.size())); });
    return {{"images", images}};
}

nlohmann::json ImageService::blobStatus(const CachedBlob& blob) const {
    auto& b = const_cast<CachedBlob&>(blob);
    const BlobCounters& c = b.counters();
    const uint32_t chunks = b.cache().chunkCount();
    const uint32_t present = b.cache().bitmap().count();
    nlohmann::json j = {{"id", blob.descriptor().id},
                        {"size", blob.descriptor().uncompressed_size},
                        {"chunks", chunks},
                        {"chunks_present", present},
                        {"misses", c.misses.load()},
                        {"hits", c.hits.load()},
                        {"bytes_fetched", c.bytes_fetched.load()},
                        {"bytes_from_cache", c.bytes_from_cache.load()},
                        {"prefetched_chunks", c.prefetched_chunks.load()},
                        {"prefetched_bytes", c.prefetched_bytes.load()},
                        {"errors", c.errors.load()}};
    if (config_.prefetch.enable) j["prefetch_done"] = chunks == 0 ? 100 : uint64_t{present} * 100 / chunks;
    return j;
}

nlohmann::json ImageService::resolve(const ResolveRequest& request) {
    const registry::ImageReference reference = registryReference(request.image);
    std::shared_ptr<RegistryBackend> backend;
    {
        std::lock_guard lock(mutex_);
        if (shut_down_) rafs::fail("rafsd is shutting down");
        backend = registryBackend(reference);
    }
    // Without the lock, as a mount's round trips (mountOrReattach).
    registry::RegistryStore store(backend->client());
    const RegistryImage image = registry_images_.obtain(store, reference);
    auto layer = [](const registry::Descriptor& d, const char* role, const std::optional<std::string>& diff_id) {
        nlohmann::json out = {{"digest", d.digest}, {"size", d.size}, {"media_type", d.media_type}, {"role", role}};
        if (diff_id) out["diff_id"] = *diff_id;
        return out;
    };
    nlohmann::json layers = nlohmann::json::array();
    for (const registry::Descriptor& blob : image.layers.blobs) layers.push_back(layer(blob, "blob", blob.digest));
    layers.push_back(layer(image.layers.bootstrap, "bootstrap", image.layers.bootstrapDiffId()));
    return {{"image", request.image}, {"manifest", image.manifest_digest}, {"layers", std::move(layers)}};
}

nlohmann::json ImageService::gc(const GcRequest& request) {
    // Held throughout: the collection frees chunks through the fetcher, which shutdown() ends.
    std::lock_guard lock(mutex_);
    if (shut_down_) rafs::fail("rafsd is shutting down");
    releaseDetached();  // their caches may go
    const GcReport report = collector_->collect(GcTrigger::Manual, request.dry_run);
    nlohmann::json removed = nlohmann::json::array();
    for (const auto& [name, bytes] : report.removed) removed.push_back({{"name", name}, {"bytes", bytes}});
    return {{"dry_run", report.dry_run},       {"size_before", report.size_before}, {"size_after", report.size_after},
            {"removed", std::move(removed)},   {"chunk_bytes", report.chunk_bytes}, {"chunk_blobs", report.chunk_blobs}};
}

nlohmann::json ImageService::status(const StatusRequest& request) {
    std::lock_guard lock(mutex_);
    releaseDetached();
    nlohmann::json images = nlohmann::json::array();
    const std::optional<fs::path> wanted =
        request.mountpoint ? std::optional(fs::weakly_canonical(*request.mountpoint)) : std::nullopt;
    forEachImage([&](const Image& i) {
        if (wanted && *wanted != i.mountpoint) return;
        nlohmann::json blobs = nlohmann::json::array();
        for (const auto& b : i.blobs) blobs.push_back(blobStatus(*b));
        images.push_back(imageEntry(i, std::move(blobs)));
    });
    if (request.mountpoint && images.empty()) rafs::fail("{} is not mounted by rafsd", request.mountpoint->string());
    nlohmann::json response = {{"images", images}};
    const CacheCounters& cache = collector_->counters();
    response["cache"] = {{"size", collector_->size()},
                         {"max_size", collector_->policy().max_size},
                         {"removed_caches", cache.removed_caches.load()},
                         {"freed_chunk_bytes", cache.freed_chunk_bytes.load()}};
    nlohmann::json backends = nlohmann::json::array();
    for (NetworkBackend* backend : networkBackends()) backends.push_back(networkStatus(*backend));
    if (!backends.empty()) response["backends"] = backends;
    return response;
}

std::string ImageService::metrics() {
    std::lock_guard lock(mutex_);
    MetricsText m;
    using Labels = MetricsText::Labels;
    m.family("rafsd_mounts", "gauge", "Images rafsd serves, by engine.");
    for (const EngineKind engine : {EngineKind::Fanotify, EngineKind::Fscache}) {
        const auto n = std::count_if(images_.begin(), images_.end(), [&](const Image& i) { return i.engine == engine; });
        m.sample("rafsd_mounts", {{"engine", std::string(engineName(engine))}}, static_cast<uint64_t>(n));
    }
    m.family("rafsd_image_blob", "gauge", "1 for each blob of each image: which mountpoint reads which blob.");
    std::vector<std::pair<CachedBlob*, Labels>> blobs;  // each blob once, also when images share it
    forEachImage([&](const Image& image) {
        for (const auto& blob : image.blobs) {
            const std::string& id = blob->descriptor().id;
            m.sample("rafsd_image_blob", {{"mountpoint", image.shownAt().string()}, {"blob", id}}, 1);
            if (std::none_of(blobs.begin(), blobs.end(), [&](const auto& b) { return b.first == blob.get(); })) {
                // An fscache blob is one per volume (blobKey): images of other volumes have their
                // own, which must not be two series of the same labels.
                Labels labels{{"blob", id}};
                if (image.engine == EngineKind::Fscache) {
                    labels.push_back({"fscache_volume", image.fscacheVolume()});
                }
                blobs.push_back({blob.get(), std::move(labels)});
            }
        }
    });
    const auto each = [&](std::string_view name, std::string_view type, std::string_view help, auto value) {
        m.family(name, type, help);
        for (auto& [blob, labels] : blobs) m.sample(name, labels, value(*blob));
    };
    each("rafsd_blob_misses_total", "counter", "Reads that had to wait for a fetch.",
         [](CachedBlob& b) { return b.counters().misses.load(); });
    each("rafsd_blob_hits_total", "counter", "Reads answered from the cache at once.",
         [](CachedBlob& b) { return b.counters().hits.load(); });
    each("rafsd_blob_fetched_bytes_total", "counter", "Bytes read from the backend.",
         [](CachedBlob& b) { return b.counters().bytes_fetched.load(); });
    each("rafsd_blob_cache_read_bytes_total", "counter", "Bytes of reads answered from the cache at once.",
         [](CachedBlob& b) { return b.counters().bytes_from_cache.load(); });
    each("rafsd_blob_prefetched_chunks_total", "counter", "Chunks fetched by prefetch.",
         [](CachedBlob& b) { return b.counters().prefetched_chunks.load(); });
    each("rafsd_blob_prefetched_bytes_total", "counter", "Stored bytes of the chunks fetched by prefetch.",
         [](CachedBlob& b) { return b.counters().prefetched_bytes.load(); });
    each("rafsd_blob_errors_total", "counter", "Chunks that could not be fetched intact: each bad one every time it is fetched, and of a failed transfer or cache write those a read waited for (readers got EIO).",
         [](CachedBlob& b) { return b.counters().errors.load(); });
    each("rafsd_blob_chunks", "gauge", "Chunks of the blob.", [](CachedBlob& b) { return uint64_t{b.cache().chunkCount()}; });
    each("rafsd_blob_chunks_present", "gauge", "Chunks of the blob in the cache, verified.",
         [](CachedBlob& b) { return uint64_t{b.cache().bitmap().count()}; });
    each("rafsd_blob_cached_bytes", "gauge", "Uncompressed bytes of the blob in the cache.", [](CachedBlob& b) {
        uint64_t bytes = 0;
        for (uint32_t ci = 0; ci < b.cache().chunkCount(); ++ci) {
            if (b.cache().isPresent(ci)) bytes += b.cache().chunk(ci).size;
        }
        return bytes;
    });
    m.family("rafsd_miss_latency_seconds", "histogram", "From a read that had to wait until it was answered.");
    for (auto& [blob, labels] : blobs) m.histogram("rafsd_miss_latency_seconds", labels, blob->counters().miss_latency.snapshot());
    m.family("rafsd_backend_request_latency_seconds", "histogram", "One backend read of a run of chunks.");
    for (auto& [blob, labels] : blobs) {
        m.histogram("rafsd_backend_request_latency_seconds", labels, blob->counters().backend_latency.snapshot());
    }
    const CacheCounters& cache = collector_->counters();
    m.family("rafsd_cache_size_bytes", "gauge", "Space the cache takes on disk: the cache dir, the bootstraps kept in the state dir, and the data of mounted fscache images.");
    m.sample("rafsd_cache_size_bytes", {}, collector_->size());
    m.family("rafsd_cache_max_size_bytes", "gauge", "cache.max_size (0: unbounded).");
    m.sample("rafsd_cache_max_size_bytes", {}, collector_->policy().max_size);
    m.family("rafsd_cache_gc_runs_total", "counter", "Cache collections, by what started them.");
    m.sample("rafsd_cache_gc_runs_total", {{"trigger", "auto"}}, cache.runs_auto.load());
    m.sample("rafsd_cache_gc_runs_total", {{"trigger", "manual"}}, cache.runs_manual.load());
    m.sample("rafsd_cache_gc_runs_total", {{"trigger", "no_space"}}, cache.runs_no_space.load());
    m.family("rafsd_cache_evictions_total", "counter", "Unused caches (whole blobs or fscache volumes) removed.");
    m.sample("rafsd_cache_evictions_total", {}, cache.removed_caches.load());
    m.family("rafsd_cache_evicted_bytes_total", "counter", "Bytes freed: of unused caches removed, and of chunks of mounted blobs.");
    m.sample("rafsd_cache_evicted_bytes_total", {{"kind", "unused"}}, cache.removed_bytes.load());
    m.sample("rafsd_cache_evicted_bytes_total", {{"kind", "chunks"}}, cache.freed_chunk_bytes.load());
    m.family("rafsd_prefetch_backlog_chunks", "gauge", "Chunks queued for prefetch.");
    m.sample("rafsd_prefetch_backlog_chunks", {}, fetcher_ ? fetcher_->prefetchBacklog() : 0);
    using Stats = registry::TransferStats;
    const std::vector<NetworkBackend*> network = networkBackends();
    const auto transfers = [&](std::string_view name, std::string_view help, std::atomic<uint64_t> Stats::*counter) {
        m.family(name, "counter", help);
        for (NetworkBackend* b : network) m.sample(name, {{"backend", b->describe()}}, (b->stats().*counter).load());
    };
    transfers("rafsd_backend_requests_total", "HTTP requests sent, every attempt.", &Stats::requests);
    transfers("rafsd_backend_received_bytes_total", "Response body bytes received.", &Stats::bytes);
    transfers("rafsd_backend_retries_total", "Attempts after a failed one.", &Stats::retries);
    transfers("rafsd_backend_failures_total", "Reads and probes that failed after every retry.", &Stats::failures);
    transfers("rafsd_backend_token_refreshes_total", "Bearer tokens fetched.", &Stats::token_refreshes);
    transfers("rafsd_backend_whole_blob_answers_total",
              "Range requests the server answered with the whole blob (it ignores Range).", &Stats::whole_blob_answers);
    if (fanotify_) {
        const FanotifyCounters c = fanotify_->counters();
        m.family("rafsd_fanotify_events_total", "counter", "FAN_PRE_ACCESS events read.");
        m.sample("rafsd_fanotify_events_total", {}, c.events);
        m.family("rafsd_fanotify_answers_total", "counter", "Events answered, by answer.");
        m.sample("rafsd_fanotify_answers_total", {{"answer", "allow"}}, c.allowed);
        m.sample("rafsd_fanotify_answers_total", {{"answer", "deny"}}, c.denied);
        m.family("rafsd_fanotify_overflows_total", "counter", "Queue overflows: events the kernel lost.");
        m.sample("rafsd_fanotify_overflows_total", {}, c.overflows);
    }
    if (fscache_) {
        const FscacheCounters c = fscache_->counters();
        m.family("rafsd_fscache_requests_total", "counter", "cachefiles requests, by kind.");
        m.sample("rafsd_fscache_requests_total", {{"request", "open"}}, c.opens + c.refused);
        m.sample("rafsd_fscache_requests_total", {{"request", "read"}}, c.reads);
        m.sample("rafsd_fscache_requests_total", {{"request", "close"}}, c.closes);
        m.family("rafsd_fscache_read_errors_total", "counter", "READs completed without their data (EIO).");
        m.sample("rafsd_fscache_read_errors_total", {}, c.read_errors);
        m.family("rafsd_fscache_stale_chunks_total", "counter", "Chunks the kernel's cache file had lost.");
        m.sample("rafsd_fscache_stale_chunks_total", {}, c.stale_chunks);
    }
    return m.text();
}

bool ImageService::mountsOutliveWorker() {
    std::lock_guard lock(mutex_);
    std::vector<std::string> lost;
    forEachImage([&](const Image& image) {
        const bool kept = image.engine == EngineKind::Fanotify ? kept_files_.has_value() : fscache_kept_;
        if (!kept) lost.push_back(image.mountpoint.string());
    });
    if (lost.empty()) return true;
    log::error("reload refused: {} {} on kernel objects only this worker holds (an engine other than the "
               "configured one); unmount {} first", fmt::join(lost, ", "), lost.size() == 1 ? "is mounted" : "are mounted",
               lost.size() == 1 ? "it" : "them");
    return false;
}

void ImageService::handOver() {
    std::lock_guard lock(mutex_);
    for (const Image& image : images_) saveTraceOrLog(image);
    log::info("handing over {} mount{}", images_.size(), images_.size() == 1 ? "" : "s");
}

size_t ImageService::shutdown(bool keep_unfilled) {
    std::lock_guard lock(mutex_);
    if (shut_down_) return 0;
    shut_down_ = true;
    prefetcher_.reset();
    // Before the engines, collection for a full disk too: a fanotify stop may fill the cache files
    // of a mount still in use, which must then keep every chunk.
    collector_->stop();
    size_t left_up = 0;
    std::set<fs::path> kept_mounted;  // served ones left up for the next rafsd serve
    if (fanotify_) {
        eraseUnserved([&](const MountRecord& r) {
            if (r.engine != engineName(EngineKind::Fanotify)) return false;
            // A detached one's path is no longer its own.
            if (!r.detached && !fanotify_->unmountUnserved(r.mountpoint)) {
                ++left_up;
                return false;
            }
            // Unmounted: a layer store's entries go with the mount.
            if (r.layer_store && !r.detached) withdrawMarkersOrLog(r.mountpoint);
            const int watch = adoptedWatch(r);
            if (fanotify_->superblockGone(watch)) {
                // Mounted again at the next start, as a served one is (below).
                if (r.layer_store && !r.detached) remount_at_start_.push_back(r);
                return true;
            }
            log::error("{}: served by no rafsd, and {}: once rafsd is gone, its unread bytes read as zeros; stop what "
                       "uses it", r.mountpoint.string(),
                       watch < 0 ? "whether it is still read off its path is unknown"
                                 : "still read off its path (an overlay's lower layer, another mount namespace)");
            ++left_up;
            return false;
        });
        using BusyAtStop = FanotifyEngine::BusyAtStop;
        const FanotifyEngine::LeftInUse left =
            fanotify_->stop(keep_unfilled ? BusyAtStop::LeaveForTakeover : BusyAtStop::Detach);
        left_up += left.detached;  // logged by the engine
        for (const fs::path& mountpoint : left.attached) {
            ++left_up;
            const auto it = std::find_if(images_.begin(), images_.end(),
                                         [&](const Image& i) { return i.mountpoint == mountpoint && i.detached_as.empty(); });
            if (it == images_.end()) {
                log::error("{}: in use, and its cache files could not be completed: left mounted, but this rafsd knows "
                           "no image of it to list; its unread bytes read as zeros: stop what uses it and unmount it",
                           mountpoint.string());
                continue;
            }
            log::error("{}: in use, and its cache files could not be completed: left mounted and in the mount table; "
                       "its unread bytes read as zeros until rafsd serve runs again and takes it over",
                       mountpoint.string());
            unserved_.push_back(recordOf(*it));
            kept_mounted.insert(mountpoint);
        }
    }
    if (fscache_) {
        fscache_->stop();
        const FscacheCounters c = fscache_->counters();
        log::info("fscache: {} OPEN ({} refused), {} READ ({} for blobs, {} failed, {} stale chunks), {} CLOSE; "
                  "blob READ to READ_COMPLETE p50 {} us, p99 {} us",
                  c.opens + c.refused, c.refused, c.reads, c.blob_reads, c.read_errors, c.stale_chunks, c.closes,
                  c.read_latency_p50_us, c.read_latency_p99_us);
    }
    for (const Image& image : images_) saveTraceOrLog(image);
    // The engines wait for nothing any more: what is still queued (the rest of a fill the fanotify
    // stop gave up on) is dropped, so the stop ends once the fetches running end. Those end here,
    // while the engines they complete requests into (and whose on-complete callbacks unmark files)
    // still exist: members are destroyed engines first.
    fetcher_->abandonQueued();
    fetcher_.reset();
    forEachImage([&](const Image& image) {
        for (const auto& blob : image.blobs) {
            const BlobCounters& c = blob->counters();
            log::info("blob {}: fetched {} bytes, {} of {} chunks present, {} misses, {} errors",
                      blob->descriptor().id, c.bytes_fetched.load(), blob->cache().bitmap().count(),
                      blob->cache().chunkCount(), c.misses.load(), c.errors.load());
        }
        flushOrLog(image);
    });
    // The engines' stop() unmounted every image: a layer store's entries go with their mount, and
    // come back when the next rafsd mounts it again.
    for (const Image& image : images_) {
        if (!image.layer_store || kept_mounted.count(image.mountpoint) != 0) continue;
        withdrawMarkersOrLog(image.mountpoint);
        remount_at_start_.push_back(recordOf(image));
    }
    images_.clear();
    detached_.clear();
    saveMountTableOrLog();
    dropUnusedKeptFds();
    return left_up;
}

}  // namespace rafsd
