#include "daemon/api/LayerStore.h"

#include "format/Error.h"
#include "format/FileIo.h"
#include "daemon/core/DurableFile.h"
#include "registry/Base64.h"
#include "registry/ImageReference.h"

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
// images still in the store list too. podman keeps one copy of a layer, under the entry of the
// image it pulled first, so another image's containers may run on those.
constexpr std::string_view kRemovedMarker = "removed";

bool isRemoved(const fs::path& top) {
    std::error_code ec;
    return fs::exists(top / kRemovedMarker, ec);
}

// The layer digests of the store's images but `except`'s, those removed left out.
std::set<std::string> listedLayers(const fs::path& store, const fs::path& except) {
    std::set<std::string> digests;
    std::error_code ec;
    for (const auto& image : fs::directory_iterator(store, ec)) {
        if (image.path() == except || !image.is_directory(ec) || isRemoved(image.path())) continue;
        for (const auto& layer : fs::directory_iterator(image.path(), ec)) {
            if (isSha256Digest(layer.path().filename().string())) digests.insert(layer.path().filename().string());
        }
    }
    if (ec) rafs::fail("cannot list the layer store {}: {}", store.string(), ec.message());
    return digests;
}

// Whether a layer entry is a data blob's, which another image can share: stored uncompressed, its
// diff an empty directory. Never the bootstrap layer's: its diff is the image's own mount, gone
// with the image.
bool isDataLayer(const fs::path& layer) {
    std::error_code ec;
    if (!fs::is_directory(layer / "diff", ec) || !fs::is_empty(layer / "diff", ec) || isMountPoint(layer / "diff")) {
        return false;
    }
    try {
        return json::parse(rafs::readFile((layer / "info").string(), 1 << 16)).value("compression", -1) == 0;
    } catch (const std::exception&) {
        return false;
    }
}

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

void LayerStore::add(const std::string& image, const std::vector<StoreLayer>& layers,
                     const std::function<void(const fs::path&)>& mount,
                     const std::function<void(const fs::path&)>& umount) const {
    const fs::path top = imageDir(image);
    std::error_code ec;
    for (const fs::path& existing : {top, legacyImageDir(image)}) {
        if (fs::exists(existing, ec) && !isRemoved(existing)) {
            rafs::fail("{} is in the layer store {} already ({}); remove it first", image, dir_.string(), existing.string());
        }
    }
    // Of an image removed before, the entries kept for other images' containers stay as they are.
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
    fs::path top = imageDir(image);
    std::error_code ec;
    if (!fs::is_directory(top, ec)) top = legacyImageDir(image);
    if (!fs::is_directory(top, ec) || isRemoved(top)) rafs::fail("{} is not in the layer store {}", image, dir_.string());
    const std::string in_use = fmt::format("{}: still in use (a container runs on it): unmounted, and served until "
                                           "it is gone; its entries stay for it: remove it again once the container "
                                           "is gone",
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
    const std::set<std::string> listed = listedLayers(dir_, top);
    std::vector<fs::path> gone;
    for (const auto& entry : fs::directory_iterator(top)) {
        if (listed.count(entry.path().filename().string()) == 0 || !isDataLayer(entry.path())) gone.push_back(entry.path());
    }
    if (gone.size() == diffs.size()) {
        gone = {top};
    } else {
        // Marked first: a crash part of the way leaves a removed image, not a broken one.
        writeFileSynced(top / kRemovedMarker, image + "\n");
    }
    for (const fs::path& path : gone) {
        fs::remove_all(path, ec);
        if (ec) rafs::fail("cannot remove {}: {}", path.string(), ec.message());
    }
    dropUnlistedKeptLayers();
}

void LayerStore::dropUnlistedKeptLayers() const {
    std::vector<fs::path> removed;
    std::error_code ec;
    for (const auto& image : fs::directory_iterator(dir_, ec)) {
        if (isRemoved(image.path())) removed.push_back(image.path());
    }
    if (ec) rafs::fail("cannot list the layer store {}: {}", dir_.string(), ec.message());
    for (const fs::path& image : removed) {
        const std::set<std::string> listed = listedLayers(dir_, image);
        std::vector<fs::path> unlisted;
        bool left = false;
        for (const auto& layer : fs::directory_iterator(image)) {
            const std::string name = layer.path().filename().string();
            if (!isSha256Digest(name)) continue;
            if (listed.count(name) != 0) {
                left = true;
            } else {
                unlisted.push_back(layer.path());
            }
        }
        if (!left) unlisted = {image};
        for (const fs::path& path : unlisted) {
            fs::remove_all(path, ec);
            if (ec) rafs::fail("cannot remove {}: {}", path.string(), ec.message());
        }
    }
}

}  // namespace rafsd
