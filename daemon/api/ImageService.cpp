#include "daemon/api/ImageService.h"

#include "builder/format/Error.h"
#include "daemon/api/NetworkBackends.h"
#include "daemon/backends/LocalfsBackend.h"
#include "builder/format/BlobFile.h"
#include "builder/format/Digest.h"
#include "daemon/core/BlobMetaLoader.h"
#include "daemon/core/Log.h"
#include "daemon/core/SparseCacheFile.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <thread>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

// On-demand cachefiles is usable when the device exists and its module supports the mode; the
// probe cannot bind without a daemon's cache dir, so existence of the device is the test here
// and `bind ondemand` (FscacheEngine::start) gives the precise error later.
bool fscacheAvailable() { return ::access(FscacheDevice::kPath, F_OK) == 0; }

// The default fsid: stable for a bootstrap, so a remount finds its cache files again.
std::string defaultFsid(const rafs::Bootstrap& bootstrap) {
    return "rafs-" + rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bootstrap.bytes())).substr(0, 32);
}

void checkFscacheName(std::string_view what, const std::string& name) {
    if (!FscacheEngine::validName(name)) rafs::fail("{} '{}' is not a name of {}", what, name, FscacheEngine::kNameRule);
}

// `rafsd mount --test-fetch-delay`: holds every backend read for a while, so a test can kill the
// daemon while the kernel waits for a miss.
class DelayedBackend final : public Backend {
public:
    DelayedBackend(std::shared_ptr<Backend> inner, std::chrono::milliseconds delay)
        : inner_(std::move(inner)), delay_(delay) {}
    void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override {
        std::this_thread::sleep_for(delay_);
        inner_->read(blob_id, offset, out);
    }
    uint64_t size(const std::string& blob_id) override { return inner_->size(blob_id); }
    std::string describe() const override { return inner_->describe() + " (delayed)"; }

private:
    std::shared_ptr<Backend> inner_;
    std::chrono::milliseconds delay_;
};

// The inline bootstrap of a Nydus blob as a file for a file-backed mount: <cache dir>/<sha256>.boot,
// written under a temporary name and renamed, so a mount never sees a torn one.
fs::path extractBootstrap(const rafs::Bootstrap& bootstrap, const fs::path& cache_dir) {
    const fs::path path =
        cache_dir / (rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bootstrap.bytes())) + ".boot");
    if (fs::exists(path)) return path;
    const fs::path temp = path.string() + ".tmp";
    {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(bootstrap.bytes().data()),
                  static_cast<std::streamsize>(bootstrap.bytes().size()));
        out.close();
        if (!out) rafs::fail("cannot write the inline bootstrap to {}", temp.string());
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) rafs::failErrno("cannot rename " + temp.string());
    return path;
}

// Each blob on the network once, at mount: a wrong password, an unknown CA, a missing blob or an
// unreachable host fails the mount with an error naming it, instead of the first reads with EIO.
// The last blob of an image with an inline bootstrap is the local file itself.
void probeBlobs(Backend& backend, const rafs::Image& image) {
    const auto& blobs = image.bootstrap.blobs();
    for (size_t i = 0; i < blobs.size(); ++i) {
        if (image.inline_meta && i + 1 == blobs.size()) continue;
        try {
            backend.size(blobs[i].id);
        } catch (const std::exception& e) {
            rafs::fail("blob {}: {}", blobs[i].id, e.what());
        }
    }
}

}  // namespace

bool ImageService::hasErofsMount(const fs::path& dir) {
    struct statfs st {};
    if (::statfs(dir.c_str(), &st) != 0) rafs::failErrno("statfs " + dir.string());
    return static_cast<unsigned long>(st.f_type) == EROFS_SUPER_MAGIC_V1;
}

ImageService::ImageService(Config config) : config_(std::move(config)) {
    FetchOptions fetch;
    fetch.amplify = config_.fetch.amplify;
    fetch.threads = config_.fetch.max_inflight;
    fetch.retries = config_.fetch.retries;
    fetch.decoders = config_.fetch.workers;
    fetcher_ = std::make_unique<ChunkFetcher>(fetch);
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
        auto engine = std::make_unique<FanotifyEngine>(*fetcher_, std::chrono::microseconds(config_.daemon.busy_poll_us));
        engine->start();
        fanotify_ = std::move(engine);
    }
    return *fanotify_;
}

FscacheEngine& ImageService::fscache() {
    if (!fscache_) {
        auto engine = std::make_unique<FscacheEngine>(*fetcher_);
        // A subdirectory: cachefiles owns its tree, and rafsd keeps its own state next to it.
        engine->start(config_.daemon.cache_dir / "fscache", "rafsd");
        fscache_ = std::move(engine);
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
}

void ImageService::startFscache() {
    std::lock_guard lock(mutex_);
    fscache().start(fscache_restore_);
}

std::shared_ptr<Backend> ImageService::backendFor(const MountRequest& request) {
    std::shared_ptr<Backend> backend;
    if (request.blob_dir) {
        backend = std::make_shared<LocalfsBackend>(*request.blob_dir);
    } else if (config_.backend.type == Config::BackendType::Localfs) {
        backend = std::make_shared<LocalfsBackend>(config_.backend.localfs.dir);
    } else {
        if (!network_) network_ = makeNetworkBackend(config_.backend);
        backend = network_;
    }
    if (fetch_delay_.count() > 0) backend = std::make_shared<DelayedBackend>(std::move(backend), fetch_delay_);
    return backend;
}

std::shared_ptr<CachedBlob> ImageService::openBlob(const rafs::Bootstrap& bootstrap,
                                                   const rafs::BootstrapBlob& blob,
                                                   const std::shared_ptr<Backend>& backend,
                                                   const std::string& fscache_volume) {
    const std::string key = fscache_volume.empty() ? blob.id : "fscache:" + fscache_volume + "/" + blob.id;
    if (auto existing = blobs_[key].lock()) return existing;
    const fs::path& dir = config_.daemon.cache_dir;
    BlobDescriptor descriptor = loadBlobDescriptor(bootstrap, blob, *backend, dir);
    std::unique_ptr<CacheFile> file;
    fs::path state_dir = dir;
    if (fscache_volume.empty()) {
        file = SparseCacheFile::open(dir / (blob.id + ".blob.data"), blob.uncompressed_size);
    } else {
        state_dir = dir / "fscache-state" / fscache_volume;
        std::error_code ec;
        fs::create_directories(state_dir, ec);
        if (ec) rafs::fail("cannot create {}: {}", state_dir.string(), ec.message());
        file = std::make_unique<FscacheCacheFile>(blob.id, blob.uncompressed_size);
    }
    auto bitmap = ReadinessBitmap::open(state_dir / (blob.id + ".chunkmap"), blob.id, blob.chunk_count,
                                        blob.uncompressed_size);
    if (bitmap.discarded()) log::warn("blob {}: cache state discarded: {}", blob.id, bitmap.discardReason());
    std::vector<ChunkExtent> extents;
    extents.reserve(descriptor.chunks.size());
    for (const auto& c : descriptor.chunks) extents.push_back({c.uncompressed_offset, c.uncompressed_size});
    auto cache = std::make_unique<BlobCache>(std::move(file), std::move(bitmap), std::move(extents));
    if (cache->droppedAtOpen() != 0) {
        log::warn("blob {}: {} chunks marked present had no data in the cache file; they will be fetched again",
                  blob.id, cache->droppedAtOpen());
    }
    auto cached = std::make_shared<CachedBlob>(std::move(descriptor), std::move(cache), backend);
    blobs_[key] = cached;
    return cached;
}

std::vector<PrefetchChunk> ImageService::prefetchTableChunks(
    const rafs::Bootstrap& bootstrap, const std::vector<std::shared_ptr<CachedBlob>>& blobs) const {
    std::vector<PrefetchChunk> chunks;
    auto add = [&](const rafs::Inode& inode) {
        for (const rafs::InodeChunk& c : inode.chunks) {
            if (c.blob_index < blobs.size()) chunks.push_back({blobs[c.blob_index], c.ci_index});
        }
    };
    for (uint32_t nid : bootstrap.prefetchNids()) {
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

nlohmann::json ImageService::mount(const MountRequest& request) { return mountOrReattach(request, false); }

nlohmann::json ImageService::reattach(const MountRequest& request) {
    if (!fscache_) rafs::fail("reattach {}: no adopted {}", request.mountpoint.string(), FscacheDevice::kPath);
    if (!hasErofsMount(request.mountpoint)) rafs::fail("reattach: {} is not an EROFS mount", request.mountpoint.string());
    return mountOrReattach(request, true);
}

nlohmann::json ImageService::mountOrReattach(const MountRequest& request, bool reattach) {
    std::lock_guard lock(mutex_);
    if (shut_down_) rafs::fail("rafsd is shutting down");
    const fs::path mountpoint = fs::weakly_canonical(request.mountpoint);
    for (const Image& image : images_) {
        if (image.mountpoint == mountpoint) rafs::fail("{} is already mounted by rafsd", mountpoint.string());
    }
    struct stat st {};
    if (::stat(mountpoint.c_str(), &st) != 0) rafs::failErrno("mountpoint " + mountpoint.string());
    if (!S_ISDIR(st.st_mode)) rafs::fail("mountpoint {} is not a directory", mountpoint.string());
    const EngineKind requested = reattach ? EngineKind::Fscache : request.engine.value_or(config_.daemon.engine);
    EngineKind engine = resolveEngine(requested);
    if (request.register_only && requested == EngineKind::Fanotify) {
        rafs::fail("register only: needs the fscache engine; a fanotify mount is made by rafsd itself");
    }
    if (engine == EngineKind::Fscache) {
        try {
            fscache();
        } catch (const std::exception& e) {
            if (requested != EngineKind::Auto || request.register_only) throw;
            log::info("fscache engine unusable ({}); trying fanotify", e.what());
            FanotifyEngine::checkKernel();
            engine = EngineKind::Fanotify;
        }
    }
    const fs::path bootstrap_path = fs::absolute(request.bootstrap);
    // Either a bootstrap file or a Nydus blob with an inline bootstrap, whose own blob (the last
    // blob table entry) is that file whatever its name. A fanotify (file-backed) mount needs the
    // bootstrap as a file of its own: it is extracted into the cache dir.
    rafs::Image opened = rafs::openImage(bootstrap_path.string());
    const rafs::Bootstrap& bootstrap = opened.bootstrap;
    std::error_code ec;
    fs::create_directories(config_.daemon.cache_dir, ec);
    if (ec) rafs::fail("cannot create cache dir {}: {}", config_.daemon.cache_dir.string(), ec.message());

    auto backend = backendFor(request);
    // Not when taking over a mount the kernel still has: its cached data serves even while the
    // registry is unreachable, and refusing would leave the mount without a daemon.
    if (!reattach && !request.blob_dir && network_) probeBlobs(*backend, opened);
    if (opened.inline_meta) {
        backend = std::make_shared<BlobFileBackend>(std::move(backend), bootstrap.blobs().back().id, bootstrap_path);
    }
    Image image;
    image.bootstrap = bootstrap_path;
    image.mountpoint = mountpoint;
    image.engine = engine;
    if (request.blob_dir) image.blob_dir = fs::absolute(*request.blob_dir);
    std::string fscache_volume;
    if (engine == EngineKind::Fscache) {
        image.fsid = request.fsid.value_or(defaultFsid(bootstrap));
        image.domain_id = request.domain_id.value_or("");
        checkFscacheName("fsid", image.fsid);
        if (!image.domain_id.empty()) checkFscacheName("domain_id", image.domain_id);
        fscache_volume = image.domain_id.empty() ? image.fsid : image.domain_id;
    }
    for (const rafs::BootstrapBlob& blob : bootstrap.blobs()) {
        image.blobs.push_back(openBlob(bootstrap, blob, backend, fscache_volume));
    }
    image.index = fetcher_->addImage(image.blobs);
    const FscacheAttach how = reattach ? FscacheAttach::Reattach
                              : request.register_only ? FscacheAttach::Register
                                                      : FscacheAttach::Mount;
    std::string mount_options;
    if (engine == EngineKind::Fscache) {
        mountFscache(image, bootstrap, how);
        mount_options = FscacheEngine::mountOptions(image.fsid, image.domain_id);
    } else {
        FanotifyMount spec;
        spec.image = image.index;
        spec.bootstrap = opened.inline_meta ? extractBootstrap(bootstrap, config_.daemon.cache_dir) : bootstrap_path;
        spec.mountpoint = mountpoint;
        for (uint32_t i = 0; i < image.blobs.size(); ++i) {
            auto& file = dynamic_cast<SparseCacheFile&>(image.blobs[i]->cache().file());
            spec.blobs.push_back({i, file.path(), file.fd(), file.size(), image.blobs[i]->cache().complete()});
        }
        FanotifyEngine& engine_ref = fanotify();
        try {
            engine_ref.mount(spec);
        } catch (...) {
            fetcher_->removeImage(image.index);
            throw;
        }
        for (uint32_t i = 0; i < image.blobs.size(); ++i) {
            image.blobs[i]->onComplete([&engine_ref, index = image.index, i] { engine_ref.unmarkComplete(index, i); });
        }
    }
    if (prefetcher_) prefetcher_->add(prefetchTableChunks(bootstrap, image.blobs), image.blobs);
    const char* done = how == FscacheAttach::Reattach ? "reattached" : how == FscacheAttach::Register ? "registered" : "mounted";
    log::info("{} {} on {} ({} blobs, engine {})", done, bootstrap_path.string(), mountpoint.string(),
              image.blobs.size(), engineName(engine));
    images_.push_back(std::move(image));
    nlohmann::json response = {{"mountpoint", mountpoint.string()}, {"engine", std::string(engineName(engine))}};
    if (how == FscacheAttach::Register) {
        response["mount_command"] = "mount -t erofs -o " + mount_options + " none " + mountpoint.string();
    }
    return response;
}

void ImageService::mountFscache(Image& image, const rafs::Bootstrap& bootstrap, FscacheAttach how) {
    FscacheMount spec;
    spec.image = image.index;
    spec.fsid = image.fsid;
    spec.domain_id = image.domain_id;
    spec.bootstrap = bootstrap.bytes();
    spec.mountpoint = image.mountpoint;
    for (uint32_t i = 0; i < image.blobs.size(); ++i) {
        spec.blobs.push_back({i, image.blobs[i]->descriptor().id, image.blobs[i]});
    }
    try {
        FscacheEngine& engine = fscache();
        if (how == FscacheAttach::Reattach) {
            engine.reattach(spec);
        } else {
            engine.start(fscache_restore_);
            // Listed before mount(2): a daemon dying during the mount leaves an entry the next one
            // finds unmounted and forgets, never a mount it does not know about. A registered
            // image is listed too, so that a restarted daemon takes over the user's mount of it.
            saveFscacheTable(&image);
            try {
                if (how == FscacheAttach::Register) engine.reattach(spec);
                else engine.mount(spec);
            } catch (...) {
                saveFscacheTableOrLog();
                throw;
            }
        }
    } catch (...) {
        fetcher_->removeImage(image.index);
        throw;
    }
}

void ImageService::saveFscacheTable(const Image* adding) {
    if (fscache_table_.empty()) return;
    std::vector<FscacheMountRecord> records;
    auto add = [&records](const Image& i) {
        if (i.engine == EngineKind::Fscache) records.push_back({i.bootstrap, i.mountpoint, i.fsid, i.domain_id, i.blob_dir});
    };
    for (const Image& i : images_) add(i);
    if (adding != nullptr) add(*adding);
    saveFscacheMounts(fscache_table_, records);
}

void ImageService::saveFscacheTableOrLog() {
    try {
        saveFscacheTable(nullptr);
    } catch (const std::exception& e) {
        log::error("{}; a restarted rafsd will not know the current fscache mounts", e.what());
    }
}

void ImageService::recoverFscacheMounts() {
    if (fscache_table_.empty()) return;
    std::vector<FscacheMountRecord> records;
    try {
        records = loadFscacheMounts(fscache_table_);
    } catch (const std::exception& e) {
        // Refusing to start would not save those mounts either; new ones can still be served.
        log::error("{}; the mounts it lists cannot be taken over", e.what());
    }
    for (const FscacheMountRecord& r : records) {
        try {
            if (!hasErofsMount(r.mountpoint)) {
                log::info("{}: listed in {} but no longer mounted; forgotten", r.mountpoint.string(),
                          fscache_table_.string());
                continue;
            }
            if (!fscache_restore_) {
                log::warn("{}: left mounted by a rafsd whose {} is gone, so its reads fail; unmount it",
                          r.mountpoint.string(), FscacheDevice::kPath);
                continue;
            }
            MountRequest request;
            request.bootstrap = r.bootstrap;
            request.mountpoint = r.mountpoint;
            request.blob_dir = r.blob_dir;
            request.engine = EngineKind::Fscache;
            request.fsid = r.fsid;
            if (!r.domain_id.empty()) request.domain_id = r.domain_id;
            reattach(request);
        } catch (const std::exception& e) {
            log::error("{}: cannot take it over: {}", r.mountpoint.string(), e.what());
        }
    }
    std::lock_guard lock(mutex_);
    saveFscacheTable(nullptr);
}

nlohmann::json ImageService::umount(const UmountRequest& request) {
    std::lock_guard lock(mutex_);
    const fs::path mountpoint = fs::weakly_canonical(request.mountpoint);
    auto it = std::find_if(images_.begin(), images_.end(), [&](const Image& i) { return i.mountpoint == mountpoint; });
    if (it == images_.end()) rafs::fail("{} is not mounted by rafsd", mountpoint.string());
    if (it->engine == EngineKind::Fscache) {
        fscache().umount(mountpoint);
    } else {
        fanotify().umount(mountpoint);
    }
    if (prefetcher_) prefetcher_->forget(it->blobs);
    fetcher_->removeImage(it->index);
    for (auto& blob : it->blobs) blob->cache().flush();
    log::info("unmounted {}", mountpoint.string());
    const bool fscache = it->engine == EngineKind::Fscache;
    images_.erase(it);
    if (fscache) saveFscacheTableOrLog();
    return nlohmann::json::object();
}

nlohmann::json ImageService::list() {
    std::lock_guard lock(mutex_);
    nlohmann::json images = nlohmann::json::array();
    for (const Image& i : images_) {
        images.push_back({{"mountpoint", i.mountpoint.string()},
                          {"bootstrap", i.bootstrap.string()},
                          {"engine", std::string(engineName(i.engine))},
                          {"blobs", i.blobs.size()}});
    }
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
                        {"errors", c.errors.load()}};
    if (config_.prefetch.enable) j["prefetch_done"] = chunks == 0 ? 100 : uint64_t{present} * 100 / chunks;
    return j;
}

nlohmann::json ImageService::status(const StatusRequest& request) {
    std::lock_guard lock(mutex_);
    nlohmann::json images = nlohmann::json::array();
    for (const Image& i : images_) {
        if (request.mountpoint && fs::weakly_canonical(*request.mountpoint) != i.mountpoint) continue;
        nlohmann::json blobs = nlohmann::json::array();
        for (const auto& b : i.blobs) blobs.push_back(blobStatus(*b));
        images.push_back({{"mountpoint", i.mountpoint.string()},
                          {"bootstrap", i.bootstrap.string()},
                          {"engine", std::string(engineName(i.engine))},
                          {"blobs", blobs}});
    }
    if (request.mountpoint && images.empty()) rafs::fail("{} is not mounted by rafsd", request.mountpoint->string());
    nlohmann::json response = {{"images", images}};
    if (network_) response["backends"] = nlohmann::json::array({networkStatus(*network_)});
    return response;
}

void ImageService::shutdown() {
    std::lock_guard lock(mutex_);
    if (shut_down_) return;
    shut_down_ = true;
    prefetcher_.reset();
    if (fanotify_) fanotify_->stop();
    if (fscache_) {
        fscache_->stop();
        const FscacheCounters c = fscache_->counters();
        log::info("fscache: {} OPEN ({} refused), {} READ ({} for blobs, {} failed, {} stale chunks), {} CLOSE; "
                  "blob READ to READ_COMPLETE p50 {} us, p99 {} us",
                  c.opens + c.refused, c.refused, c.reads, c.blob_reads, c.read_errors, c.stale_chunks, c.closes,
                  c.read_latency_p50_us, c.read_latency_p99_us);
    }
    for (Image& image : images_) {
        for (auto& blob : image.blobs) {
            const BlobCounters& c = blob->counters();
            log::info("blob {}: fetched {} bytes, {} of {} chunks present, {} misses, {} errors",
                      blob->descriptor().id, c.bytes_fetched.load(), blob->cache().bitmap().count(),
                      blob->cache().chunkCount(), c.misses.load(), c.errors.load());
            try {
                blob->cache().flush();
            } catch (const std::exception& e) {
                log::error("blob {}: flushing cache state: {}", blob->descriptor().id, e.what());
            }
        }
    }
    images_.clear();
    saveFscacheTableOrLog();  // stop() unmounted every fscache image
}

}  // namespace rafsd
