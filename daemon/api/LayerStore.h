// A RAFS image in containers-storage's additional layer store (podman, CRI-O and buildah look
// layers up there before they download them; containers/storage drivers/overlay/overlay.go,
// getAdditionalLayerPath). The store is configured as "DIR:ref", so each image has a directory of
// its own, named by the image reference as the puller names it:
//   DIR/<base64(reference)>/<compressed layer digest>/diff   the layer's tree: the EROFS mount of
//                                                            the whole image for the bootstrap
//                                                            layer, an empty directory for a
//                                                            data blob (its files are in the mount)
//                                                     /info   JSON: compressed-diff-digest,
//                                                            compressed-size, diff-digest (the
//                                                            config's diff_id), diff-size when
//                                                            known, compression
//                                                     /blob   the layer's bytes for a copy out of
//                                                            the store (podman push, save): a
//                                                            directory here, so such a read fails
//                                                            (EISDIR) instead of sending bytes
//                                                            that are not the layer
//   DIR/<base64(reference)>/removed                          the image was removed; its directory
//                                                            keeps only the entries of data layers
//                                                            other images list (see remove())
// `blob` is made last: containers-storage takes a layer only when diff, info and blob exist, so it
// never sees one half written. add() and remove() hold a lock on DIR: each reads other images'
// entries.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace rafsd {

struct StoreLayer {
    std::string digest;  // "sha256:<64 hex>", the compressed layer's
    uint64_t size = 0;
    bool bootstrap = false;
    std::string diff_id;  // "sha256:<64 hex>"
    std::optional<uint64_t> diff_size;
    int compression = 0;  // containers/storage's archive.Compression: 0 none, 2 gzip, 4 zstd

    // The layers of rafsd's answer to a resolve request (ControlProtocol.h). Throws rafs::Error
    // naming `image` and what is missing or malformed: a layer without a diff_id, a digest that is
    // not sha256:<64 hex>, no bootstrap layer last.
    static std::vector<StoreLayer> fromResolve(const nlohmann::json& response, const std::string& image);
};

class LayerStore {
public:
    explicit LayerStore(std::filesystem::path dir);

    // DIR/<base64(image)>, the reference normalised as containers/image prints it (":latest" added
    // when it names no tag or digest). Throws rafs::Error if `image` is not a reference.
    std::filesystem::path imageDir(const std::string& image) const;

    // Throws rafs::Error unless the store is a directory: made by the user, who names it in
    // storage.conf, since a mistyped path made here would be read by nobody (podman would pull the
    // RAFS blobs as layers and fail far from the cause). add() checks it first.
    void checkExists() const;

    // Writes the entries of `image`'s layers; `mount(diff)` mounts the image on the bootstrap
    // layer's diff directory before that layer's blob appears, `umount(diff)` undoes it if a later
    // step fails. Throws rafs::Error when the image is in the store already or a step fails; then
    // nothing of it is left (but for the entries kept of it, removed before).
    void add(const std::string& image, const std::vector<StoreLayer>& layers,
             const std::function<void(const std::filesystem::path&)>& mount,
             const std::function<void(const std::filesystem::path&)>& umount) const;

    // Removes `image`'s entries; `umount(diff)` is called for each diff directory that is a mount
    // point, and says whether the mount is still in use (only detached); `served_under(dir)` says
    // whether rafsd still serves a mount detached from under the image's directory. Throws
    // rafs::Error when the image is not in the store, a diff stays mounted, or a mount is still in
    // use (then the entries stay: they are a running container's overlay lower directories).
    // A data layer another image of the store lists too keeps its entry (podman may run that
    // image's containers on it), without its blob marker, until no image lists it; so does the
    // image's directory, marked removed. An image added again takes those entries back. What a
    // remove cut short left behind goes at the next add or remove.
    void remove(const std::string& image, const std::function<bool(const std::filesystem::path&)>& umount,
                const std::function<bool(const std::filesystem::path&)>& served_under) const;

    // The info file of a layer.
    static std::string infoJson(const StoreLayer& layer);

    // `blob` is the marker containers-storage takes a layer by: rafsd (which knows a layer store
    // mount by MountRequest::layer_store) withdraws every layer's marker of the image whose
    // bootstrap layer's `diff` is `bootstrap_diff` when that mount goes (a stop, an unmount), so
    // that podman finds no layer there instead of running on an empty directory, and
    // reinstates them when it has mounted the image there again. Withdrawn, the bootstrap layer's
    // `diff` goes too when it is an empty directory, no mount (restoreMountpoint makes it again
    // before a mount). A path not shaped like a store entry's diff is left alone. Throws
    // rafs::Error naming what could not be changed.
    static void withdrawMarkers(const std::filesystem::path& bootstrap_diff) { setMarkers(bootstrap_diff, false); }
    static void reinstateMarkers(const std::filesystem::path& bootstrap_diff) { setMarkers(bootstrap_diff, true); }

    // Makes `bootstrap_diff` again for a mount, if its layer's entry is still there; false if not
    // (the image was removed from the store). Throws rafs::Error if it cannot.
    static bool restoreMountpoint(const std::filesystem::path& bootstrap_diff);

private:
    static void setMarkers(const std::filesystem::path& bootstrap_diff, bool present);
    // Removes the entries kept of removed images that no image of the store lists any more.
    void dropUnlistedKeptLayers() const;
    std::filesystem::path legacyImageDir(const std::string& image) const;
    std::filesystem::path dir_;
};

}  // namespace rafsd
