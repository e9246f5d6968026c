#include "daemon/api/RegistryImages.h"

#include "format/Bootstrap.h"
#include "format/BootstrapCheck.h"
#include "format/Digest.h"
#include "format/Error.h"
#include "format/InputFile.h"
#include "daemon/core/Concurrently.h"
#include "daemon/core/DiskUsage.h"
#include "daemon/core/DurableFile.h"
#include "daemon/core/Log.h"
#include "registry/BootstrapLayer.h"
#include "registry/ImageResolver.h"
#include "registry/RafsLayers.h"

#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMetaFile = "image.json";
constexpr const char* kBootstrapFile = "image.boot";
// Copies being made: ".tmp-<pid>-<n>-<digest prefix>"; being removed: ".tmp-<pid>-gc-<digest prefix>".
constexpr std::string_view kTempPrefix = ".tmp-";
constexpr const char* kDirPrefix = "sha256-";

std::string sha256Hex(std::span<const uint8_t> bytes) {
    return rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bytes));
}

// Every blob the bootstrap reads from must be a data layer of the manifest: those are the blobs the
// registry serves from this repository.
void checkBlobsAreLayers(const rafs::Bootstrap& bootstrap, const registry::RafsLayers& layers, const std::string& name) {
    for (const rafs::BootstrapBlob& blob : bootstrap.blobs()) {
        if (!layers.hasBlob(blob.id)) {
            rafs::fail("{}: the bootstrap reads blob {}, which is not a layer of the image's manifest", name, blob.id);
        }
    }
}

// Copies a rafsd that died while making them left behind.
void removeAbandoned(const fs::path& dir) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
        const std::string file = entry.path().filename().string();
        if (!file.starts_with(kTempPrefix)) continue;
        const std::string_view rest = std::string_view(file).substr(kTempPrefix.size());
        pid_t pid = 0;
        const auto [end, error] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
        if (error == std::errc() && pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH)) continue;
        std::error_code remove_error;
        fs::remove_all(entry.path(), remove_error);
    }
}

}  // namespace

fs::path RegistryImages::imageDir(const std::string& manifest_digest) const {
    return dir_ / (kDirPrefix + manifest_digest.substr(manifest_digest.find(':') + 1));
}

std::vector<RegistryImages::KeptCopy> RegistryImages::list() const {
    std::vector<KeptCopy> copies;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.starts_with(kDirPrefix)) continue;  // copies being made or removed
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        // Counted as the collector counts the dir it is in.
        copies.push_back({"sha256:" + name.substr(std::string_view(kDirPrefix).size()), DiskUsage::of(it->path()).bytes,
                          st.st_mtim.tv_sec});
    }
    if (ec && ec != std::errc::no_such_file_or_directory) rafs::fail("cannot list {}: {}", dir_.string(), ec.message());
    return copies;
}

void RegistryImages::forget(const std::string& manifest_digest) {
    const fs::path dir = imageDir(manifest_digest);
    const fs::path gone = dir_ / fmt::format("{}{}-gc-{}", kTempPrefix, ::getpid(), manifest_digest.substr(7, 16));
    if (::rename(dir.c_str(), gone.c_str()) != 0) {
        if (errno == ENOENT) return;
        rafs::failErrno("rename " + dir.string() + " to " + gone.string());
    }
    std::error_code ec;
    fs::remove_all(gone, ec);
    // What is left goes with the next keep() (removeAbandoned) once this process has ended.
    if (ec) rafs::fail("cannot remove {}: {}", gone.string(), ec.message());
}

std::optional<RegistryImage> RegistryImages::kept(const std::string& digest) {
    const fs::path dir = imageDir(digest);
    std::error_code ec;
    if (!fs::exists(dir, ec)) return std::nullopt;
    try {
        const std::vector<uint8_t> text = rafs::InputFile((dir / kMetaFile).string()).readAll();
        const auto meta = nlohmann::json::parse(text.begin(), text.end());
        const std::string manifest = meta.at("manifest").get<std::string>();
        if (registry::sha256Digest(manifest) != digest) rafs::fail("the manifest kept is not {}", digest);
        const registry::Manifest parsed =
            registry::Manifest::parse(manifest, meta.at("media_type").get<std::string>(), dir.string());
        registry::RafsLayers layers = registry::RafsLayers::of(parsed, dir.string());
        const rafs::Bootstrap bootstrap((dir / kBootstrapFile).string());
        if (sha256Hex(bootstrap.bytes()) != meta.at("bootstrap_sha256").get<std::string>()) {
            rafs::fail("{} is not the bootstrap that was kept", kBootstrapFile);
        }
        // Its last use, for the collector (KeptImageCopies): a copy in use is never the oldest.
        renewLastUse(dir);
        return RegistryImage{digest, dir / kBootstrapFile, std::move(layers), std::nullopt};
    } catch (const std::exception& e) {
        log::warn("{}: a damaged copy of image {} ({}); fetching it again", dir.string(), digest, e.what());
        fs::remove_all(dir, ec);
        if (ec) rafs::fail("cannot remove {}: {}", dir.string(), ec.message());
        return std::nullopt;
    }
}

RegistryImage RegistryImages::keep(const registry::FetchedManifest& manifest, const registry::RafsLayers& layers,
                                   const std::string& reference, std::span<const uint8_t> bootstrap) {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec) rafs::fail("cannot create {}: {}", dir_.string(), ec.message());
    removeAbandoned(dir_);
    // Numbered: two mounts of one image in this process may keep it at the same time.
    static std::atomic<uint64_t> copies{0};
    const fs::path temp = dir_ / fmt::format("{}{}-{}-{}", kTempPrefix, ::getpid(), copies.fetch_add(1),
                                             manifest.digest.substr(7, 16));
    const fs::path final_dir = imageDir(manifest.digest);
    // Not fsynced (a few ms on the mount path, more on a busy journal): kept() checks the manifest
    // digest and the bootstrap's sha256 at every reuse and fetches a torn copy again, and a mount
    // made from the file does not outlive a crash of the host.
    try {
        fs::remove_all(temp);
        fs::create_directory(temp);
        writeFileUnsynced(temp / kBootstrapFile, bootstrap);
        const nlohmann::json meta = {{"manifest_digest", manifest.digest},
                                     {"media_type", manifest.media_type},
                                     {"manifest", manifest.bytes},
                                     {"reference", reference},
                                     {"bootstrap_sha256", sha256Hex(bootstrap)}};
        writeFileUnsynced(temp / kMetaFile, meta.dump(2) + "\n");
        if (::rename(temp.c_str(), final_dir.c_str()) != 0) {
            // Another rafsd kept the same image meanwhile: same digest, same content. Used now,
            // for the collector.
            if (errno != EEXIST && errno != ENOTEMPTY) rafs::failErrno("rename " + temp.string() + " to " + final_dir.string());
            fs::remove_all(temp);
            fs::last_write_time(final_dir, fs::file_time_type::clock::now());
        }
    } catch (const fs::filesystem_error& e) {
        fs::remove_all(temp, ec);
        rafs::fail("{}: cannot keep its bootstrap in {}: {}", reference, dir_.string(), e.what());
    } catch (...) {
        fs::remove_all(temp, ec);
        throw;
    }
    return RegistryImage{manifest.digest, final_dir / kBootstrapFile, layers, std::nullopt};
}

RegistryImage RegistryImages::obtain(registry::ImageStore& store, const registry::ImageReference& ref,
                                     const std::function<void(const registry::RafsLayers&)>& alongside) {
    const std::string name = ref.str();
    if (!ref.digest.empty()) {
        if (auto image = kept(ref.digest)) return std::move(*image);
    }
    registry::ResolvedManifest resolved =
        registry::resolveManifest(store, ref.reference(), registry::Platform::host(), registry::ImageKind::Rafs, name);
    if (resolved.fetched.digest != ref.digest) {
        if (auto image = kept(resolved.fetched.digest)) return std::move(*image);
    }
    const registry::RafsLayers layers = registry::RafsLayers::of(resolved.manifest, name);
    std::vector<uint8_t> bytes;
    runConcurrently(alongside ? 2 : 1, 2, [&](size_t i) {
        if (i == 0) bytes = registry::fetchBootstrapLayer(store, layers.bootstrap, name);
        else alongside(layers);
    });
    rafs::Bootstrap bootstrap(std::move(bytes), fmt::format("{} ({})", name, registry::kBootstrapLayerPath));
    rafs::BootstrapSummary summary = rafs::checkBootstrap(bootstrap);
    checkBlobsAreLayers(bootstrap, layers, name);
    log::info("{}: manifest {}, bootstrap of {} bytes fetched", name, resolved.fetched.digest, bootstrap.bytes().size());
    RegistryImage image = keep(resolved.fetched, layers, name, bootstrap.bytes());
    image.fetched = CheckedBootstrap{std::move(bootstrap), std::move(summary)};
    return image;
}

}  // namespace rafsd
