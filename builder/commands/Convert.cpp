#include "builder/commands/Convert.h"
#include "builder/commands/InterruptCleanup.h"
#include "builder/commands/RunDirectory.h"

#include "builder/commands/Build.h"
#include "builder/commands/TransferProgress.h"
#include "builder/source/RemoteLayerSource.h"
#include "builder/source/TarSource.h"
#include "format/Error.h"
#include "registry/BootstrapLayer.h"
#include "registry/ImageResolver.h"
#include "registry/LayoutLock.h"
#include "registry/TlsConfig.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace rafs::build {

namespace {

using registry::Descriptor;
using registry::ImageReference;
using registry::ImageStore;
using registry::Manifest;
using registry::ResolvedManifest;

// One client stack for both ends: TLS from the certs.d layout, credentials from the authfile.
class Clients {
public:
    explicit Clients(const ConvertOptions& o) : options_(o) {
        auto tls = std::make_shared<registry::TlsConfig>(std::map<std::string, registry::HostTlsFiles>{}, o.cert_dir);
        registry::TransportOptions transport;
        // No limit on a whole request: the upload of a large blob takes as long as the link needs
        // (6 GB at 10 Mbit/s: 80 minutes), and a request that timed out would only be tried again
        // from its start. Stalls are caught by the low-speed limit instead.
        transport.timeout = std::chrono::seconds(0);
        transport_ = std::make_shared<registry::RetryingTransport>(
            std::make_shared<registry::HttpTransport>(transport, tls), registry::RetryPolicy(registry::RetryOptions{}),
            std::string(), std::chrono::seconds(30), std::make_shared<registry::TransferStats>());
        credentials_ = std::make_shared<registry::CredentialStore>(o.authfile);
    }

    // `on_create`: for a layout target, each file its blob writes create (CreatedLayout).
    std::unique_ptr<ImageStore> open(const ImageReference& ref, bool target, registry::LayoutFileCreated on_create = {}) {
        return registry::openStore(
            ref, target,
            [&](const ImageReference& r) {
                registry::RegistryOptions options;
                options.host = r.host;
                options.repository = r.repository;
                options.plain_http = options_.plain_http;
                options.push = target;
                return std::make_shared<registry::RegistryClient>(options, transport_, credentials_);
            },
            std::move(on_create));
    }

private:
    const ConvertOptions& options_;
    std::shared_ptr<registry::RetryingTransport> transport_;
    std::shared_ptr<registry::CredentialStore> credentials_;
};

// Where the blobs are built before they are pushed: in --work-dir, else $TMPDIR or /var/tmp,
// which may hold those of earlier runs that were killed (RunDirectory).
class WorkDir {
public:
    WorkDir(const std::string& parent, std::ostream& log) {
        fs::path base = parent;
        if (base.empty()) {
            const char* tmp = std::getenv("TMPDIR");
            base = tmp != nullptr && *tmp != '\0' ? tmp : "/var/tmp";
        }
        removeAbandonedRunDirectories(base, kPrefix, log);
        dir_.emplace(base, kPrefix, "work directory");
    }
    const fs::path& path() const { return dir_->path(); }

private:
    static constexpr std::string_view kPrefix = "mkrafs-convert-";
    std::optional<RunDirectory> dir_;  // nothing in it is needed after the run
};

struct PushCounts {
    size_t uploaded = 0;
    uint64_t uploaded_bytes = 0;
    size_t present = 0;
    size_t mounted = 0;
};

// HEAD first: a blob the target has is not sent again; then a cross-repository mount from each of
// `mount_from` (repositories of the same registry that may hold it); then the upload.
// True if the target has the blob or got it by a mount: nothing to upload.
// `refused`, if given, gets the last refusal of a mount.
bool reuseBlob(ImageStore& target, const std::string& digest, const std::vector<std::string>& mount_from,
               PushCounts& counts, std::string* refused = nullptr) {
    if (target.hasBlob(digest)) {
        ++counts.present;
        return true;
    }
    for (const std::string& from : mount_from) {
        // A mount the registry refuses (no pull on `from` for these credentials) only saves less:
        // the upload below goes on, and fails with its own error if the registry is at fault.
        try {
            if (target.mountBlob(digest, from)) {
                ++counts.mounted;
                return true;
            }
        } catch (const rafs::Error& e) {
            if (refused != nullptr) *refused = e.what();
        }
    }
    return false;
}

void upload(ImageStore& target, const std::string& digest, registry::RequestBody& body, PushCounts& counts) {
    target.pushBlob(digest, body);
    ++counts.uploaded;
    counts.uploaded_bytes += body.size();
}

void pushBlob(ImageStore& target, const std::string& digest, registry::RequestBody& body,
              const std::vector<std::string>& mount_from, PushCounts& counts) {
    if (!reuseBlob(target, digest, mount_from, counts)) upload(target, digest, body, counts);
}

// Copies `blob` of `source` into the file `path`, checking its digest. Not streamed from the source
// into the upload: the upload's body is read on the transport's one thread, which a registry
// source's reads need too.
void copyBlobToFile(ImageStore& source, const Descriptor& blob, const fs::path& path) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot create {}", path.string());
    registry::readBlobInPieces(source, blob, "blob", [&](std::span<const uint8_t> part) {
        out.write(reinterpret_cast<const char*>(part.data()), static_cast<std::streamsize>(part.size()));
    });
    out.close();
    if (!out) fail("cannot write {}", path.string());
}

// Uploads blobs one after another on a thread of its own, so that a layer's blob goes to the
// target while later layers build. The first error skips the rest, and is rethrown by the next
// add() or throwIfFailed() (called as each piece of a layer arrives), so that the conversion stops
// then rather than build every layer for a target that refuses them, and by finish(), which waits
// for every upload. Destroyed early, it drops what waits and ends after the upload under way.
class BlobUploader {
public:
    using Upload = std::function<void(const std::string& digest, const fs::path& path)>;
    explicit BlobUploader(Upload upload) : upload_(std::move(upload)), thread_([this] { run(); }) {}
    ~BlobUploader() {
        {
            std::lock_guard lock(mutex_);
            waiting_.clear();
        }
        stop();
    }
    BlobUploader(const BlobUploader&) = delete;
    BlobUploader& operator=(const BlobUploader&) = delete;

    void add(std::string digest, fs::path path) {
        std::lock_guard lock(mutex_);
        if (error_) std::rethrow_exception(error_);
        waiting_.emplace_back(std::move(digest), std::move(path));
        changed_.notify_all();
    }

    void throwIfFailed() {
        std::lock_guard lock(mutex_);
        if (error_) std::rethrow_exception(error_);
    }

    void finish() {
        stop();
        if (error_) std::rethrow_exception(error_);
    }

private:
    void stop() {
        {
            std::lock_guard lock(mutex_);
            closed_ = true;
        }
        changed_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

    void run() {
        for (;;) {
            std::pair<std::string, fs::path> next;
            {
                std::unique_lock lock(mutex_);
                changed_.wait(lock, [&] { return closed_ || !waiting_.empty(); });
                if (waiting_.empty()) return;
                next = std::move(waiting_.front());
                waiting_.pop_front();
                if (error_) continue;
            }
            try {
                upload_(next.first, next.second);
            } catch (...) {
                std::lock_guard lock(mutex_);
                error_ = std::current_exception();
            }
        }
    }

    Upload upload_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<std::pair<std::string, fs::path>> waiting_;
    bool closed_ = false;
    std::exception_ptr error_;
    std::thread thread_;  // last: starts when the rest is ready
};

// OCI config.md pairs the history entries that are no empty_layer with the layers, in order. When
// the blobs are as many as the source layers, the entries stay as they are (also when a chunk dict
// blob stands for a layer that gave none: the image is then the dict's again). Else a source
// layer that gave no blob (nothing new in it) is no layer of the RAFS image: its entry becomes an
// empty_layer one, and each chunk dict blob gets an entry (the bootstrap's comes last). A history
// that does not pair with the source layers to begin with is left as it is.
void pairHistoryWithLayers(json& history, const BuiltImage& built) {
    std::vector<json*> layer_entries;
    for (json& entry : history) {
        if (!entry.is_object() || !entry.value("empty_layer", false)) layer_entries.push_back(&entry);
    }
    if (layer_entries.size() != built.layer_has_blob.size() || layer_entries.size() == built.blobs.size()) return;
    for (size_t i = 0; i < layer_entries.size(); ++i) {
        if (!built.layer_has_blob[i] && layer_entries[i]->is_object()) (*layer_entries[i])["empty_layer"] = true;
    }
    const auto layer_blobs = static_cast<size_t>(std::count(built.layer_has_blob.begin(), built.layer_has_blob.end(), true));
    for (size_t k = layer_blobs; k < built.blobs.size(); ++k) {
        history.push_back({{"created_by", "mkrafs convert"}, {"comment", "Nydus chunk dict blob"}});
    }
}

registry::Platform platformOf(const ResolvedManifest& m, const json& config) {
    return m.platform ? *m.platform : registry::Platform::ofConfig(config);
}

// The config's rootfs.diff_ids: one "sha256:<hex>" per layer (OCI image spec, config.md), each
// checked against its layer's uncompressed tar as it is read (addTar). `what` names the config.
struct Converted {
    Descriptor manifest;  // of the RAFS manifest, with its platform
    Descriptor original;  // of the source manifest, with its platform
};

class Converter {
public:
    Converter(const ConvertOptions& o, std::ostream& log, ImageStore& source, ImageStore& target,
              const ImageReference& source_ref, const ImageReference& target_ref, std::vector<std::string> mount_from)
        : o_(o), log_(log), source_(source), target_(target), source_ref_(source_ref), target_ref_(target_ref),
          mount_from_(std::move(mount_from)) {}

    // Builds into `work` (which must exist) with `chunk_dict` (a bootstrap), then pushes
    // everything but the manifest.
    Converted convert(const ResolvedManifest& image, const fs::path& work, const std::optional<std::string>& chunk_dict) {
        const std::string name = source_ref_.str() + "@" + image.fetched.digest;
        const Manifest& m = image.manifest;
        if (m.isRafs()) fail("{}: already a RAFS image (its last layer is a Nydus bootstrap)", source_ref_.str());
        if (m.layers.empty()) fail("{}: the image has no layers", name);
        uint64_t total = 0;
        for (size_t i = 0; i < m.layers.size(); ++i) {
            const Descriptor& l = m.layers[i];
            if (!registry::media::isTarLayer(l.media_type)) {
                fail("{}: layer {} ({}) has media type {}, which mkrafs convert does not handle (tar, tar+gzip, "
                     "tar+zstd)", name, i, l.digest, l.media_type);
            }
            total += l.size;
        }
        const std::vector<uint8_t> config_bytes =
            registry::readVerifiedBlob(source_, m.config, registry::kMaxConfigBytes, name + ": config");
        json config = json::parse(config_bytes, nullptr, false);
        if (!config.is_object()) fail("{}: config {} is not a JSON object", name, m.config.digest);
        const registry::Platform platform = platformOf(image, config);
        // An index was resolved by the platform asked for; a single manifest is only what it is.
        if (o_.platform && !image.platform) {
            if (platform.architecture.empty()) {
                fail("{}: its config names no architecture, so it cannot be told to be for {} (--platform)", name,
                     *o_.platform);
            }
            if (!platform.matches(registry::Platform::parse(*o_.platform))) {
                fail("{}: the image is for {}, not {} (--platform); it has no index to choose from", name,
                     platform.str(), *o_.platform);
            }
        }
        const std::vector<std::string> source_diff_ids = registry::configDiffIds(config, m.layers.size(), name + ": config " + m.config.digest);

        const bool terminal = ::isatty(STDERR_FILENO) == 1 && &log_ == &std::cerr;
        TransferProgress progress(log_, terminal, m.layers.size(), total);
        progress.line(fmt::format("converting {} ({}, {} layers, {:.1f} MiB)", source_ref_.str(), platform.str(),
                                  m.layers.size(), static_cast<double>(total) / (1 << 20)));
        // Before the sources: their download threads ask it whether an upload failed, and end
        // before it does.
        BlobUploader uploader([&](const std::string& digest, const fs::path& path) {
            registry::FileBody body(path);
            pushBlob(target_, digest, body, mountCandidates(), counts_);
        });
        DownloadSlots slots(std::max(1u, o_.parallel_layers));
        std::vector<std::unique_ptr<RemoteLayerSource>> sources;
        for (size_t i = 0; i < m.layers.size(); ++i) {
            auto remaining = std::make_shared<uint64_t>(m.layers[i].size);
            sources.push_back(std::make_unique<RemoteLayerSource>(
                source_, m.layers[i], i, slots, fmt::format("{}: layer {} ({})", source_ref_.str(), i, m.layers[i].digest),
                [&progress, &uploader, remaining](uint64_t n) {
                    // A failed upload ends the layers being downloaded, each at its next piece
                    // (up to 4 MiB on), with that upload's error.
                    uploader.throwIfFailed();
                    progress.add(n);
                    *remaining -= n;
                    if (*remaining == 0) progress.layerDone();
                }));
        }
        std::vector<LayerInput> inputs;
        for (size_t i = 0; i < m.layers.size(); ++i) {
            inputs.push_back({m.layers[i].digest.substr(0, 19), [&, i](FileTree& tree, ChunkSink& sink, unsigned layer) {
                                  addTar(std::move(sources[i]), tree, sink, layer, source_diff_ids[i]);
                              }});
        }
        BuildOptions build = o_.build;
        build.chunk_dict = chunk_dict;
        const BuiltImage built = buildLayers(
            build, inputs, work, [&](const std::string& line) { progress.line(line); },
            [&](const BlobInfo& b) { uploader.add("sha256:" + b.id, b.path); });
        progress.finish();
        const double convert_seconds = progress.seconds();
        uploader.finish();
        const registry::BootstrapLayerBlob boot = registry::makeBootstrapLayer(built.bootstrap);

        // Blobs first (above), then the bootstrap layer, the config, and the manifest last.
        Manifest out;
        out.media_type = registry::media::kOciManifest;
        // What builders say of the image (its source, revision, base), as containerd's converter,
        // which nydus-snapshotter's builds on, keeps them.
        out.annotations = m.annotations;
        json diff_ids = json::array();
        uint64_t blob_bytes = 0;
        for (const BlobInfo& b : built.blobs) {
            Descriptor d;
            d.media_type = registry::media::kNydusBlob;
            d.digest = "sha256:" + b.id;
            d.annotations[registry::annotation::kNydusBlob] = "true";
            if (b.path.empty()) {
                // A chunk dict blob: the target must have it or be able to mount it.
                d.size = b.entry.compressed_size;
                requireBlob(d.digest);
            } else {
                d.size = fs::file_size(b.path);  // uploaded by `uploader` as the build went on
                blob_bytes += d.size;
            }
            diff_ids.push_back(d.digest);
            out.layers.push_back(d);
        }
        Descriptor bootstrap;
        bootstrap.media_type = registry::media::kOciLayerGzip;
        bootstrap.digest = boot.digest;
        bootstrap.size = boot.gzip.size();
        bootstrap.annotations = {{registry::annotation::kNydusBootstrap, "true"},
                                 {registry::annotation::kNydusFsVersion, "6"},
                                 {registry::annotation::kUncompressed, boot.tar_digest}};
        registry::BytesBody boot_body(boot.gzip);
        pushBlob(target_, bootstrap.digest, boot_body, mountCandidates(), counts_);
        diff_ids.push_back(boot.tar_digest);
        out.layers.push_back(bootstrap);

        config["rootfs"] = {{"type", "layers"}, {"diff_ids", diff_ids}};
        if (!config.contains("history") || !config["history"].is_array()) config["history"] = json::array();
        pairHistoryWithLayers(config["history"], built);
        config["history"].push_back({{"created_by", "mkrafs convert"}, {"comment", "Nydus Bootstrap Layer"}});
        const std::string config_out = config.dump();
        out.config.media_type = registry::media::kOciConfig;
        out.config.digest = registry::sha256Digest(config_out);
        out.config.size = config_out.size();
        registry::BytesBody config_body(config_out);
        pushBlob(target_, out.config.digest, config_body, mountCandidates(), counts_);

        const std::string manifest_bytes = out.serialize();
        Converted result;
        result.manifest.media_type = out.media_type;
        result.manifest.digest = registry::sha256Digest(manifest_bytes);
        result.manifest.size = manifest_bytes.size();
        result.manifest.platform = platform;
        manifests_.emplace_back(result.manifest.digest, manifest_bytes);
        result.original.media_type = image.fetched.media_type;
        result.original.digest = image.fetched.digest;
        result.original.size = image.fetched.bytes.size();
        result.original.platform = platform;
        log_ << fmt::format("{}: {} layers -> {} blobs ({:.1f} MiB, {} unique chunks) + bootstrap ({} KiB) in {:.1f} s\n",
                            platform.str(), m.layers.size(), built.blobs.size(),
                            static_cast<double>(blob_bytes) / (1 << 20), built.unique_chunks,
                            fs::file_size(built.bootstrap) / 1024, convert_seconds);
        return result;
    }

    // The original image into the target repository (for --merge-index): mounted or copied.
    // `dir`: a work directory, where a blob the target lacks is copied on its way.
    void copyOriginal(const ResolvedManifest& image, const fs::path& dir) {
        std::vector<Descriptor> blobs = image.manifest.layers;
        blobs.push_back(image.manifest.config);
        for (const Descriptor& d : blobs) {
            if (reuseBlob(target_, d.digest, mountCandidates(), counts_)) continue;
            const fs::path copy = dir / "original-blob";
            copyBlobToFile(source_, d, copy);
            registry::FileBody body(copy);
            upload(target_, d.digest, body, counts_);
            fs::remove(copy);
        }
        target_.putManifest({}, image.fetched.media_type, image.fetched.bytes);
    }

    // RAFS manifests by digest (before any index naming them).
    void pushManifests() {
        for (const auto& [digest, bytes] : manifests_) target_.putManifest({}, registry::media::kOciManifest, bytes);
    }

    const std::vector<std::pair<std::string, std::string>>& manifests() const { return manifests_; }
    const PushCounts& counts() const { return counts_; }

private:
    void requireBlob(const std::string& digest) {
        std::string refused;
        if (reuseBlob(target_, digest, mountCandidates(), counts_, &refused)) return;
        fail("chunk dict blob {} is not in {} and cannot be mounted from another repository there (--mount-from){}",
             digest, target_.describe(), refused.empty() ? std::string() : ": " + refused);
    }

    // --mount-from (and the chunk dict's repository), then the source's repository when it is
    // another one of the target's registry.
    std::vector<std::string> mountCandidates() const {
        if (target_ref_.kind != ImageReference::Kind::Registry) return {};
        std::vector<std::string> out = mount_from_;
        if (source_ref_.kind == ImageReference::Kind::Registry && source_ref_.host == target_ref_.host &&
            source_ref_.repository != target_ref_.repository) {
            out.push_back(source_ref_.repository);
        }
        return out;
    }

    const ConvertOptions& o_;
    std::ostream& log_;
    ImageStore& source_;
    ImageStore& target_;
    const ImageReference& source_ref_;
    const ImageReference& target_ref_;
    std::vector<std::string> mount_from_;
    PushCounts counts_;
    std::vector<std::pair<std::string, std::string>> manifests_;  // digest, bytes
};

// --chunk-dict: a bootstrap path as it is; an image reference is resolved to its RAFS manifest for
// each platform asked, whose bootstrap is fetched into the work dir (once per manifest), and its
// repository joins `mount_from` when it is on the target's registry, so its blobs can be mounted
// rather than required.
class ChunkDictImage {
public:
    ChunkDictImage(const std::string& dict, Clients& clients, const ImageReference& target, fs::path work,
                   std::vector<std::string>& mount_from)
        : dict_(dict), work_(std::move(work)) {
        std::error_code ec;
        if (fs::exists(dict, ec)) return;
        if (!ImageReference::looksLikeReference(dict)) fail("--chunk-dict {}: neither a file nor an image reference", dict);
        ref_ = ImageReference::parse(dict);
        store_ = clients.open(*ref_, false);
        if (ref_->kind == ImageReference::Kind::Registry && target.kind == ImageReference::Kind::Registry &&
            ref_->host == target.host && ref_->repository != target.repository) {
            mount_from.push_back(ref_->repository);
        }
    }

    // The bootstrap of the dict for `platform`.
    std::string bootstrapFor(const registry::Platform& platform) {
        if (!store_) return dict_;
        const ResolvedManifest m =
            registry::resolveManifest(*store_, ref_->reference(), platform, registry::ImageKind::Rafs, dict_);
        auto [it, added] = by_manifest_.try_emplace(m.fetched.digest);
        if (!added) return it->second;
        const std::vector<uint8_t> boot = registry::fetchBootstrapLayer(*store_, m.manifest.layers.back(), dict_);
        const fs::path path = work_ / fmt::format("chunk-dict-{}.boot", by_manifest_.size());
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<const char*>(boot.data()), static_cast<std::streamsize>(boot.size()));
        out.close();
        if (!out) failErrno("writing " + path.string());
        it->second = path.string();
        return it->second;
    }

private:
    std::string dict_;
    fs::path work_;
    std::optional<ImageReference> ref_;
    std::unique_ptr<ImageStore> store_;  // of a reference
    std::map<std::string, std::string> by_manifest_;  // manifest digest -> bootstrap file
};

// The parts of an OCI layout target that a conversion creates, removed again unless it succeeds
// (also on a signal): a new layout whole; in an existing one, its missing parts and the files its
// blob writes create (the store reports them), so that a failed conversion leaves it as it was.
// Decided under the layout's lock, which is held until this is gone: what another writer made
// meanwhile is not this conversion's to remove.
class CreatedLayout {
public:
    CreatedLayout(const ImageReference& target, const std::optional<registry::LayoutLock>& lock) {
        if (!lock) return;
        const fs::path dir = target.layout_dir;
        std::error_code ec;
        if (lock->created()) {
            created_.push_back(std::make_unique<RemovedUnlessKept>(dir));
            return;
        }
        existing_ = true;
        for (const char* name : {"oci-layout", "index.json", "blobs"}) {
            if (!fs::exists(dir / name, ec)) created_.push_back(std::make_unique<RemovedUnlessKept>(dir / name));
        }
    }
    // For the target store: called from the threads that push blobs.
    registry::LayoutFileCreated tracker() {
        if (!existing_) return {};
        return [this](const fs::path& path) {
            std::lock_guard lock(mutex_);
            created_.push_back(std::make_unique<RemovedUnlessKept>(path));
        };
    }
    void keep() {
        std::lock_guard lock(mutex_);
        for (const auto& path : created_) path->keep();
    }

private:
    bool existing_ = false;
    std::mutex mutex_;
    std::vector<std::unique_ptr<RemovedUnlessKept>> created_;
};

}  // namespace

void convert(const ConvertOptions& o, std::ostream& log) {
    validate([&] {
        BuildOptions b = o.build;
        b.output = "-";
        b.sources = {"-"};
        return b;
    }());
    const ImageReference source_ref = ImageReference::parseTyped(o.source);
    const ImageReference target_ref = ImageReference::parseTyped(o.target);
    if (!target_ref.digest.empty()) fail("target {}: name a tag, not a digest (the digest is the result)", o.target);
    if (o.all_platforms && o.platform) fail("--platform and --all-platforms exclude each other");
    Clients clients(o);
    auto source = clients.open(source_ref, false);
    std::optional<registry::LayoutLock> layout_lock;
    if (target_ref.kind == ImageReference::Kind::Layout) {
        layout_lock.emplace(target_ref.layout_dir, [&] {
            log << fmt::format("waiting for another mkrafs to finish writing oci:{}\n", target_ref.layout_dir);
        });
        if (!layout_lock->locked()) {
            log << fmt::format("oci:{}: its file system cannot lock it (flock); another mkrafs writing it at the same "
                               "time would not be kept out\n", target_ref.layout_dir);
        }
    }
    CreatedLayout created(target_ref, layout_lock);
    auto target = clients.open(target_ref, true, created.tracker());

    std::vector<ResolvedManifest> images;
    const registry::Platform requested = o.platform ? registry::Platform::parse(*o.platform) : registry::Platform::host();
    if (o.all_platforms) {
        images = registry::resolveAllPlatforms(*source, source_ref.reference(), registry::ImageKind::Original, o.source);
    } else {
        images.push_back(registry::resolveManifest(*source, source_ref.reference(), requested,
                                                   registry::ImageKind::Original, o.source));
    }
    WorkDir work(o.work_dir, log);
    std::vector<std::string> mount_from = o.mount_from;
    // The chunk dict of each image's own platform (a multi-platform dict holds one per platform),
    // each fetched once. With --all-platforms, a platform the dict has no image for is converted
    // without one, as before this dict was chosen by platform.
    std::vector<std::optional<std::string>> dicts(images.size());
    if (o.build.chunk_dict) {
        ChunkDictImage dict(*o.build.chunk_dict, clients, target_ref, work.path(), mount_from);
        for (size_t i = 0; i < images.size(); ++i) {
            const registry::Platform platform = images[i].platform.value_or(requested);
            try {
                dicts[i] = dict.bootstrapFor(platform);
            } catch (const rafs::Error& e) {
                if (!o.all_platforms) throw;
                log << fmt::format("chunk dict for {}: {}; converting it without one\n", platform.str(), e.what());
            }
        }
    }
    Converter converter(o, log, *source, *target, source_ref, target_ref, mount_from);
    std::vector<Converted> converted;
    for (size_t i = 0; i < images.size(); ++i) {
        const fs::path dir = work.path() / std::to_string(i);
        converted.push_back(converter.convert(images[i], dir, dicts[i]));
    }

    std::string final_digest;
    // A layout's index.json names the new manifest and keep() releases its blobs as one step for a
    // signal (a registry's final PUT may stall: a signal goes through meanwhile).
    std::unique_lock<std::recursive_mutex> publishing;
    const auto publish = [&](std::string_view media_type, const std::string& bytes) {
        if (target_ref.kind == ImageReference::Kind::Layout) publishing = holdInterrupts();
        target->putManifest(target_ref.tag, media_type, bytes);
    };
    if (images.size() == 1 && !o.merge_index) {
        const auto& [digest, bytes] = converter.manifests().front();
        publish(registry::media::kOciManifest, bytes);
        final_digest = digest;
    } else {
        converter.pushManifests();
        registry::Index index;
        index.media_type = registry::media::kOciIndex;
        for (size_t i = 0; i < images.size(); ++i) {
            if (o.merge_index) {
                converter.copyOriginal(images[i], work.path());
                index.manifests.push_back(converted[i].original);
            }
            Descriptor rafs = converted[i].manifest;
            // Both of Nydus's marks (rafs-v6.md §5): older readers look at os.features.
            rafs.artifact_type = registry::media::kNydusManifestArtifact;
            rafs.platform->os_features.push_back("nydus.remoteimage.v1");
            index.manifests.push_back(rafs);
        }
        const std::string bytes = index.serialize();
        publish(registry::media::kOciIndex, bytes);
        final_digest = registry::sha256Digest(bytes);
    }
    created.keep();
    if (publishing) publishing.unlock();
    const PushCounts& c = converter.counts();
    log << fmt::format("pushed {}: {} blobs uploaded ({:.1f} MiB), {} already there, {} mounted from other "
                       "repositories\n", target_ref.str(), c.uploaded, static_cast<double>(c.uploaded_bytes) / (1 << 20),
                       c.present, c.mounted);
    log << fmt::format("{}@{}\n", target_ref.kind == ImageReference::Kind::Registry
                                      ? target_ref.host + "/" + target_ref.repository
                                      : "oci:" + target_ref.layout_dir,
                       final_digest);
}

}  // namespace rafs::build
