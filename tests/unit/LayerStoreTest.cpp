#include "daemon/api/LayerStore.h"

#include "format/Error.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

using Catch::Matchers::Contains;
using nlohmann::json;
using rafsd::LayerStore;
using rafsd::StoreLayer;
namespace fs = std::filesystem;

namespace {

const std::string kImage = "127.0.0.1:5000/team/app:v1";
const std::string kBlob = "sha256:" + std::string(64, 'b');
const std::string kBoot = "sha256:" + std::string(64, 'c');
const std::string kTar = "sha256:" + std::string(64, 'd');

json resolved() {
    return {{"image", kImage},
            {"manifest", "sha256:" + std::string(64, 'a')},
            {"layers",
             {{{"digest", kBlob}, {"size", 1000}, {"media_type", "application/vnd.oci.image.layer.nydus.blob.v1"},
               {"role", "blob"}, {"diff_id", kBlob}},
              {{"digest", kBoot}, {"size", 200}, {"media_type", "application/vnd.oci.image.layer.v1.tar+gzip"},
               {"role", "bootstrap"}, {"diff_id", kTar}}}}};
}

std::string slurp(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

TEST_CASE("layer store: layers from rafsd's resolve answer", "[layerstore]") {
    const auto layers = StoreLayer::fromResolve(resolved(), kImage);
    REQUIRE(layers.size() == 2);
    CHECK(json::parse(LayerStore::infoJson(layers[0])) ==
          json{{"compressed-diff-digest", kBlob}, {"compressed-size", 1000}, {"diff-digest", kBlob}, {"diff-size", 1000},
               {"compression", 0}});
    CHECK(json::parse(LayerStore::infoJson(layers[1])) ==
          json{{"compressed-diff-digest", kBoot}, {"compressed-size", 200}, {"diff-digest", kTar}, {"compression", 2}});

    json no_diff_id = resolved();
    no_diff_id["layers"][1].erase("diff_id");
    CHECK_THROWS_WITH(StoreLayer::fromResolve(no_diff_id, kImage), Contains("containerd.io/uncompressed"));
    json traversal = resolved();
    traversal["layers"][0]["digest"] = "sha256:../../etc";
    CHECK_THROWS_WITH(StoreLayer::fromResolve(traversal, kImage), Contains("not sha256:<64 hex>"));
    json no_bootstrap = resolved();
    no_bootstrap["layers"][1]["role"] = "blob";
    CHECK_THROWS_WITH(StoreLayer::fromResolve(no_bootstrap, kImage), Contains("one bootstrap layer, last"));
    CHECK_THROWS_WITH(StoreLayer::fromResolve(json::object(), kImage), Contains("named no layers"));
}

TEST_CASE("layer store: add writes every entry, a failed mount leaves nothing, remove takes all", "[layerstore]") {
    rafs::test::TempDir dir;
    const LayerStore store(dir.path());
    const auto layers = StoreLayer::fromResolve(resolved(), kImage);
    const fs::path top = store.imageDir(kImage);
    CHECK(top.filename() == "MTI3LjAuMC4xOjUwMDAvdGVhbS9hcHA6djE=");  // base64 of the reference
    // Named as podman names it: without a tag, ":latest".
    CHECK(store.imageDir("127.0.0.1:5000/team/app") == store.imageDir("127.0.0.1:5000/team/app:latest"));

    std::vector<fs::path> mounted, unmounted;
    auto mount = [&](const fs::path& diff) {
        // When the image is mounted, its bootstrap layer's blob is not there yet: podman must not
        // take the layer before its tree is.
        CHECK_FALSE(fs::exists(diff.parent_path() / "blob"));
        mounted.push_back(diff);
    };
    auto umount = [&](const fs::path& diff) { unmounted.push_back(diff); };
    store.add(kImage, layers, mount, umount);
    CHECK(mounted == std::vector<fs::path>{top / kBoot / "diff"});
    for (const auto& digest : {kBlob, kBoot}) {
        CHECK(fs::is_directory(top / digest / "diff"));
        CHECK(fs::is_directory(top / digest / "blob"));
    }
    CHECK(json::parse(slurp(top / kBlob / "info"))["diff-digest"] == kBlob);
    CHECK((fs::status(top / kBlob / "info").permissions() & fs::perms::others_read) == fs::perms::others_read);
    CHECK_THROWS_WITH(store.add(kImage, layers, mount, umount), Contains("already"));

    // The mount gone (a stop), every layer's marker goes; mounted again, they come back. A path
    // that is no store entry's diff is left alone.
    LayerStore::withdrawMarkers(top / kBoot / "diff");
    for (const auto& digest : {kBlob, kBoot}) CHECK_FALSE(fs::exists(top / digest / "blob"));
    CHECK(fs::exists(top / kBlob / "info"));
    // The empty mount point goes too (podman then fails a container of the image, rather than run
    // it on an empty root); the data blob's empty diff stays: it is no mount point.
    CHECK_FALSE(fs::exists(top / kBoot / "diff"));
    CHECK(fs::is_directory(top / kBlob / "diff"));
    LayerStore::withdrawMarkers(top / kBoot / "diff");  // again: nothing to do
    CHECK(LayerStore::restoreMountpoint(top / kBoot / "diff"));
    CHECK(fs::is_directory(top / kBoot / "diff"));
    CHECK_FALSE(LayerStore::restoreMountpoint(dir.path() / "elsewhere" / "sha256:0" / "diff"));
    LayerStore::reinstateMarkers(top / kBoot / "diff");
    for (const auto& digest : {kBlob, kBoot}) CHECK(fs::is_directory(top / digest / "blob"));
    LayerStore::withdrawMarkers(top / kBoot);
    LayerStore::withdrawMarkers(dir.path() / "elsewhere" / "diff");
    CHECK(fs::is_directory(top / kBlob / "blob"));

    // A mount of the image rafsd still serves off its path (removed before while a container ran
    // on it): the entries stay, as the container's overlay lower directories.
    auto umount_free = [&](const fs::path& diff) {
        unmounted.push_back(diff);
        return false;
    };
    std::vector<fs::path> asked;
    auto served_under = [&](const fs::path& entry) {
        asked.push_back(entry);
        return true;
    };
    CHECK_THROWS_WITH(store.remove(kImage, umount_free, served_under), Contains("still in use"));
    CHECK(asked == std::vector<fs::path>{top});
    CHECK(fs::is_directory(top / kBlob / "diff"));
    // Not mount points here (the fake mounted nothing): remove takes the entries, unmounting nothing.
    auto none = [](const fs::path&) { return false; };
    store.remove(kImage, umount_free, none);
    CHECK(unmounted.empty());
    CHECK_FALSE(fs::exists(top));
    CHECK_THROWS_WITH(store.remove(kImage, umount_free, none), Contains("is not in the layer store"));

    auto failing = [](const fs::path&) { rafs::fail("mount failed: no such manifest"); };
    CHECK_THROWS_WITH(store.add(kImage, layers, failing, umount), "mount failed: no such manifest");
    CHECK(fs::is_empty(dir.path()));
}

// podman keeps one copy of a layer two images share, under the entry of the image it pulled first:
// removing that image from the store must leave the layer to the other image's containers.
TEST_CASE("layer store: a data layer another image lists stays until no image does", "[layerstore]") {
    rafs::test::TempDir dir;
    const LayerStore store(dir.path());
    const std::string other = "127.0.0.1:5000/team/other:v1";
    const std::string other_boot = "sha256:" + std::string(64, 'e');
    json second = resolved();
    second["image"] = other;
    second["layers"][1]["digest"] = other_boot;
    auto nothing = [](const fs::path&) {};
    auto free = [](const fs::path&) { return false; };
    store.add(kImage, StoreLayer::fromResolve(resolved(), kImage), nothing, nothing);
    store.add(other, StoreLayer::fromResolve(second, other), nothing, nothing);
    const fs::path top = store.imageDir(kImage), other_top = store.imageDir(other);

    store.remove(kImage, free, free);
    CHECK(fs::is_directory(top / kBlob / "diff"));
    // Without its marker: a pull of the removed image must not take the layer.
    CHECK_FALSE(fs::exists(top / kBlob / "blob"));
    CHECK_FALSE(fs::exists(top / kBoot));
    CHECK(fs::is_directory(other_top / kBlob / "blob"));
    CHECK(fs::is_directory(other_top / other_boot / "diff"));
    // Removed all the same: not in the store for a second remove, and it can be added again.
    CHECK_THROWS_WITH(store.remove(kImage, free, free), Contains("is not in the layer store"));
    auto failing = [](const fs::path&) { rafs::fail("mount failed"); };
    CHECK_THROWS_WITH(store.add(kImage, StoreLayer::fromResolve(resolved(), kImage), failing, nothing), "mount failed");
    CHECK(fs::is_directory(top / kBlob / "diff"));
    CHECK_FALSE(fs::exists(top / kBlob / "blob"));
    CHECK_FALSE(fs::exists(top / kBoot));
    // A remove cut short left the bootstrap layer's entry behind: the next add mounts it anew.
    fs::create_directories(top / kBoot / "diff");
    fs::create_directories(top / kBoot / "blob");
    std::vector<fs::path> mounted;
    store.add(kImage, StoreLayer::fromResolve(resolved(), kImage), [&](const fs::path& diff) { mounted.push_back(diff); },
              nothing);
    CHECK(mounted == std::vector<fs::path>{top / kBoot / "diff"});
    CHECK(fs::is_directory(top / kBoot / "blob"));
    CHECK(fs::is_directory(top / kBlob / "blob"));
    CHECK_FALSE(fs::exists(top / "removed"));
    CHECK_THROWS_WITH(store.add(kImage, StoreLayer::fromResolve(resolved(), kImage), nothing, nothing),
                      Contains("already"));

    // The other image removed: its layer is kept for this one; this one removed then, nothing is left.
    store.remove(other, free, free);
    CHECK(fs::is_directory(other_top / kBlob / "diff"));
    store.remove(kImage, free, free);
    CHECK(fs::is_empty(dir.path()));
}
