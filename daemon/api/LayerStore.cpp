#include "daemon/api/LayerStore.h"

#include "format/Error.h"
#include "format/FileIo.h"
#include "format/FileLock.h"
#include "format/UniqueFd.h"
#include "daemon/core/DurableFile.h"
#include "registry/Base64.h"
#include "registry/ImageReference.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <set>

namespace rafsd {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool isSha256Digest(const std::string& text) {
    return text.size() == 71 && text.starts_with("sha256:") &&
           std::all_of(text.begin() + 7, text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// containers/storage's archive.Compression of a layer media type (OCI and Docker names).
int compressionOf(const std::string& media_type) {
    if (media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip")) return 2;
    if (media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd")) return 4;
    return 0;
}

// Whether `path` is a mount point: on another device than its parent directory.
bool isMountPoint(const fs::path& path) {
    struct stat self {}, parent {};
    if (::lstat(path.c_str(), &self) != 0 || ::lstat(path.parent_path().c_str(), &parent) != 0) return false;
    return self.st_dev != parent.st_dev;
}

// A file in an image's directory (named by no digest, so containers-storage passes it by): the
// image was removed from the store, and its directory keeps only the data layers' entries that
// images still in the store list too, without their blob markers (a pull of the removed image
// must not take them). podman keeps one copy of a layer, under the entry of the image it pulled
// first, so another image's containers may run on those.
constexpr std::string_view kRemovedMarker = "removed";

bool isRemoved(const fs::path& top) {
    std::error_code ec;
    return fs::exists(top / kRemovedMarker, ec);
}

void failOn(const std::error_code& ec, std::string_view what, const fs::path& path) {
    if (ec) rafs::fail("cannot {} {}: {}", what, path.string(), ec.message());
}

// The layer digests of the store's images, those removed left out.
std::set<std::string> listedLayers(const fs::path& store) {
    std::set<std::string> digests;
    std::error_code ec;
    for (fs::directory_iterator it(store, ec), end; it != end; it.increment(ec)) {
        failOn(ec, "list", store);
        const fs::path image = it->path();
        if (!fs::is_directory(image) || isRemoved(image)) continue;
        for (const auto& layer : fs::directory_iterator(image)) {
            if (isSha256Digest(layer.path().filename().string())) digests.insert(layer.path().filename().string());
        }
    }
    failOn(ec, "list", store);
    return digests;
}

// Whether a layer entry is a data blob's, which another image can share: its info gives a
// diff-size, which only a data blob's has (infoJson), and its diff is an empty directory. Never
// the bootstrap layer's: its diff is the image's own mount, gone with the image.
bool isDataLayer(const fs::path& layer) {
    std::error_code ec;
    if (!fs::is_directory(layer / "diff", ec) || !fs::is_empty(layer / "diff", ec) || isMountPoint(layer / "diff")) {
        return false;
    }
    try {
        return json::parse(rafs::readFile((layer / "info").string(), 1 << 16)).contains("diff-size");
    } catch (const std::exception&) {
        return false;
    }
}

// Of the removed image at `top`, keeps the entries of data layers `listed` names, without their
// blob markers, and removes the rest; the directory too once nothing is kept.
void keepListedDataLayers(const fs::path& top, const std::set<std::string>& listed) {
    std::vector<fs::path> gone;
    bool kept = false;
    for (const auto& entry : fs::directory_iterator(top)) {
        const std::string name = entry.path().filename().string();
        if (!isSha256Digest(name)) continue;
        if (listed.count(name) != 0 && isDataLayer(entry.path())) {
            std::error_code ec;
            fs::remove(entry.path() / "blob", ec);
            failOn(ec, "remove", entry.path() / "blob");
            kept = true;
        } else {
            gone.push_back(entry.path());
        }
    }
    if (!kept) gone = {top};
    for (const fs::path& path : gone) {
        std::error_code ec;
        fs::remove_all(path, ec);
        failOn(ec, "remove", path);
    }
    if (kept) syncDirectory(top);
}

// add() and remove() of one store, one at a time: each reads the other images' entries.
class StoreLock {
public:
    explicit StoreLock(const fs::path& store) : fd_(::open(store.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
        if (fd_.get() < 0) rafs::failErrno(fmt::format("cannot open the layer store {}", store.string()));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
        if (rafs::lockExclusive(fd_.get(), deadline, store.string()) == rafs::LockOutcome::TimedOut) {
            rafs::fail("another layer-store command has held {} for 5 minutes", store.string());
        }
    }

private:
    rafs::UniqueFd fd_;
};

}  // namespace

std::vector<StoreLayer> StoreLayer::fromResolve(const json& response, const std::string& image) {
    auto it = response.find("layers");
    if (it == response.end() || !it->is_array() || it->empty()) rafs::fail("{}: rafsd named no layers", image);
    std::vector<StoreLayer> layers;
    for (const json& entry : *it) {
        auto string = [&](const char* key) -> std::string {
            auto field = entry.is_object() ? entry.find(key) : entry.end();
            return field != entry.end() && field->is_string() ? field->get<std::string>() : "";
        };
        StoreLayer layer;
        layer.digest = string("digest");
        if (!isSha256Digest(layer.digest)) rafs::fail("{}: rafsd named a layer digest that is not sha256:<64 hex>", image);
        auto size = entry.find("size");
        if (size == entry.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
            rafs::fail("{}: layer {} has no size", image, layer.digest);
        }
        layer.size = size->get<uint64_t>();
        const std::string role = string("role");
        if (role != "blob" && role != "bootstrap") rafs::fail("{}: layer {} has no role", image, layer.digest);
        layer.bootstrap = role == "bootstrap";
        layer.diff_id = string("diff_id");
        if (!isSha256Digest(layer.diff_id)) {
            rafs::fail("{}: layer {} has no uncompressed digest (its manifest lacks the containerd.io/uncompressed "
                       "annotation), which containers-storage needs", image, layer.digest);
        }
        // A data blob is stored as it is; the bootstrap layer's tar size is not in the manifest.
        if (!layer.bootstrap) layer.diff_size = layer.size;
        layer.compression = layer.bootstrap ? compressionOf(string("media_type")) : 0;
        layers.push_back(std::move(layer));
    }
    const auto bootstraps = std::ranges::count_if(layers, [](const StoreLayer& l) { return l.bootstrap; });
    if (bootstraps != 1 || !layers.back().bootstrap) rafs::fail("{}: rafsd did not name one bootstrap layer, last", image);
    return layers;
}

LayerStore::LayerStore(fs::path dir) : dir_(std::move(dir)) {}

// containers-storage looks an image up by its reference as containers/image prints it: a name
// without tag or digest gets ":latest" (docker reference.TagNameOnly).
// Where an earlier rafsctl put the entries: named by the reference as typed.
fs::path LayerStore::legacyImageDir(const std::string& image) const { return dir_ / registry::base64Encode(image); }

fs::path LayerStore::imageDir(const std::string& image) const {
    return dir_ / registry::base64Encode(registry::ImageReference::parse(image).str());
}

std::string LayerStore::infoJson(const StoreLayer& layer) {
    json info = {{"compressed-diff-digest", layer.digest},
                 {"compressed-size", layer.size},
                 {"diff-digest", layer.diff_id},
                 {"compression", layer.compression}};
    if (layer.diff_size) info["diff-size"] = *layer.diff_size;
    return info.dump() + "\n";
}

void LayerStore::checkExists() const {
    std::error_code ec;
    const fs::file_status status = fs::status(dir_, ec);
    if (status.type() == fs::file_type::not_found) {
        rafs::fail("layer store {} does not exist: make it, and name it in storage.conf ([storage.options] "
                   "additionallayerstores = [\"{}:ref\"])", dir_.string(), dir_.string());
    }
    failOn(ec, "look at", dir_);
    if (status.type() != fs::file_type::directory) rafs::fail("layer store {} is not a directory", dir_.string());
}

void LayerStore::add(const std::string& image, const std::vector<StoreLayer>& layers,
                     const std::function<void(const fs::path&)>& mount,
                     const std::function<void(const fs::path&)>& umount) const {
    const fs::path top = imageDir(image);
    std::error_code ec;
    checkExists();
    const StoreLock lock(dir_);
    for (const fs::path& existing : {top, legacyImageDir(image)}) {
        if (fs::exists(existing, ec) && !isRemoved(existing)) {
            rafs::fail("{} is in the layer store {} already ({}); remove it first", image, dir_.string(), existing.string());
        }
    }
    // Of an image removed before, the entries kept for other images' containers stay as they are
    // (anything else a crash left goes).
    if (fs::exists(top, ec)) keepListedDataLayers(top, listedLayers(dir_));
    const bool kept = fs::exists(top, ec);
    std::vector<fs::path> made;
    std::optional<fs::path> mounted;
    try {
        fs::create_directories(top);
        for (const StoreLayer& layer : layers) {
            const fs::path dir = top / layer.digest;
            // Two layers of one digest are one entry (an image may repeat a layer).
            if (!fs::create_directory(dir)) continue;
            made.push_back(dir);
            fs::create_directory(dir / "diff");
            writeFileSynced(dir / "info", infoJson(layer));
            // Readable by whoever reads the store (rootless podman with the system's storage.conf).
            fs::permissions(dir / "info", fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                              fs::perms::others_read);
            if (layer.bootstrap) {
                mount(dir / "diff");
                mounted = dir / "diff";
            }
        }
        for (const StoreLayer& layer : layers) fs::create_directory(top / layer.digest / "blob");
        fs::remove(top / kRemovedMarker);
        syncDirectory(top);
    } catch (const std::exception& e) {
        if (mounted) {
            try {
                umount(*mounted);
            } catch (const std::exception&) {
                // The mount stays: so do its entries, which remove() takes away with it.
                throw rafs::Error(fmt::format("{}: {}; its mount on {} stays, remove it with layer-store remove", image,
                                              e.what(), mounted->string()));
            }
        }
        if (kept) {
            for (const fs::path& dir : made) fs::remove_all(dir, ec);
            // Removed still: the kept entries go without their markers again.
            try {
                writeFileSynced(top / kRemovedMarker, image + "\n");
                keepListedDataLayers(top, listedLayers(dir_));
            } catch (const std::exception& again) {
                throw rafs::Error(fmt::format("{}: {}; and its kept entries in {}: {}", image, e.what(), top.string(),
                                              again.what()));
            }
        } else {
            fs::remove_all(top, ec);
        }
        if (dynamic_cast<const rafs::Error*>(&e) != nullptr) throw;
        rafs::fail("{}: cannot write the layer store entries in {}: {}", image, top.string(), e.what());
    }
}

namespace {

// The layer directories of the store entry whose bootstrap layer's diff is `diff`, or none if
// `diff` is not DIR/<image>/sha256:<hex>/diff.
std::vector<fs::path> entryLayers(const fs::path& diff) {
    const fs::path layer = diff.parent_path();
    if (diff.filename() != "diff" || !isSha256Digest(layer.filename().string())) return {};
    std::vector<fs::path> layers;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(layer.parent_path(), ec)) {
        if (isSha256Digest(entry.path().filename().string()) && fs::exists(entry.path() / "info", ec)) {
            layers.push_back(entry.path());
        }
    }
    if (ec) rafs::fail("cannot list {}: {}", layer.parent_path().string(), ec.message());
    return layers;
}

}  // namespace

void LayerStore::setMarkers(const fs::path& bootstrap_diff, bool present) {
    const std::vector<fs::path> layers = entryLayers(bootstrap_diff);
    for (const fs::path& layer : layers) {
        const fs::path marker = layer / "blob";
        std::error_code ec;
        if (present) {
            fs::create_directory(marker, ec);
        } else {
            fs::remove(marker, ec);  // an empty directory, as add() made it
        }
        if (ec) rafs::fail("cannot {} {}: {}", present ? "create" : "remove", marker.string(), ec.message());
        syncDirectory(layer);
    }
    // containers-storage never looks at the markers of layers it took already: an image pulled
    // before would run on the empty directory left. Without it, podman fails to mount the
    // container's overlay instead (its lower directory is missing).
    if (!present && !layers.empty() && !isMountPoint(bootstrap_diff)) {
        std::error_code ec;
        const bool empty_dir = fs::is_directory(bootstrap_diff, ec) && fs::is_empty(bootstrap_diff, ec);
        if (!ec && empty_dir && fs::remove(bootstrap_diff, ec)) syncDirectory(bootstrap_diff.parent_path());
        // Not there (withdrawn before) is no failure.
        if (ec && ec != std::errc::no_such_file_or_directory) {
            rafs::fail("cannot remove {}: {}", bootstrap_diff.string(), ec.message());
        }
    }
}

bool LayerStore::restoreMountpoint(const fs::path& bootstrap_diff) {
    std::error_code ec;
    if (!fs::is_directory(bootstrap_diff.parent_path(), ec)) return false;
    fs::create_directory(bootstrap_diff, ec);
    if (ec) rafs::fail("cannot create {}: {}", bootstrap_diff.string(), ec.message());
    return true;
}

void LayerStore::remove(const std::string& image, const std::function<bool(const fs::path&)>& umount,
                        const std::function<bool(const fs::path&)>& served_under) const {
    const StoreLock lock(dir_);
    fs::path top = imageDir(image);
    std::error_code ec;
    if (!fs::is_directory(top, ec)) top = legacyImageDir(image);
    if (!fs::is_directory(top, ec) || isRemoved(top)) {
        // What a remove cut short left of it, gone now.
        dropUnlistedKeptLayers();
        rafs::fail("{} is not in the layer store {}", image, dir_.string());
    }
    const std::string in_use = fmt::format("{}: still in use by a container (podman keeps the overlay of an exited "
                                           "one mounted until `podman rm`): unmounted, and served until it is gone; "
                                           "its entries stay for it: remove it again once the container is gone",
                                           image);
    // Removed before, while in use, and still so: its mount detached, served off its path.
    if (served_under(top)) rafs::fail("{}", in_use);
    std::vector<fs::path> diffs;
    for (const auto& entry : fs::directory_iterator(top)) diffs.push_back(entry.path() / "diff");
    bool still_used = false;
    for (const fs::path& diff : diffs) {
        if (isMountPoint(diff)) still_used = umount(diff) || still_used;
        if (isMountPoint(diff)) rafs::fail("{} is still mounted; its entries stay", diff.string());
    }
    // Its layers' directories are a running container's overlay: removed, its root would list empty.
    if (still_used) rafs::fail("{}", in_use);
    // Marked first: a crash part of the way leaves a removed image (cleaned up by the next add or
    // remove), not a broken one.
    writeFileSynced(top / kRemovedMarker, image + "\n");
    dropUnlistedKeptLayers();
}

void LayerStore::dropUnlistedKeptLayers() const {
    std::vector<fs::path> removed;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; it != end; it.increment(ec)) {
        failOn(ec, "list", dir_);
        if (isRemoved(it->path())) removed.push_back(it->path());
    }
    failOn(ec, "list", dir_);
    if (removed.empty()) return;
    // The same for each: removed images list none.
    const std::set<std::string> listed = listedLayers(dir_);
    for (const fs::path& image : removed) keepListedDataLayers(image, listed);
}

}  // namespace rafsd
