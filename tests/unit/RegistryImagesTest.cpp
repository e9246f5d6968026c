#include "daemon/api/RegistryImages.h"

#include "daemon/api/KeptImageCopies.h"
#include "daemon/api/MountTable.h"
#include "format/Bootstrap.h"
#include "format/Error.h"
#include "registry/RafsLayers.h"
#include "tests/unit/ImageTestUtil.h"
#include "tests/unit/MemoryImageStore.h"
#include "tests/unit/OneFileImage.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <fstream>

using namespace registry;
using Catch::Matchers::Contains;
using rafs::test::TempDir;

namespace {

// An image built by mkrafs's builder, pushed to a store as Nydus lays it out, tagged "v1".
struct PushedImage {
    TempDir dir;
    rafs::test::MemoryImageStore store;
    std::vector<uint8_t> boot;
    std::string blob_id;
    std::string digest;  // the manifest's

    explicit PushedImage(bool blob_in_layers = true, std::vector<uint8_t> boot_override = {}) {
        rafs::test::buildOneFileImage(dir.path(), "file", std::vector<uint8_t>(10000, 'f'));
        boot = rafs::test::readFile(dir / "img/image.boot");
        blob_id = rafs::Bootstrap(boot, "b").blobs().at(0).id;
        Manifest m;
        m.media_type = media::kOciManifest;
        m.config = store.putBlob(media::kOciConfig, {'{', '}'});
        if (blob_in_layers) m.layers.push_back({std::string(media::kNydusBlob), "sha256:" + blob_id, 1, {}, {}, {}});
        Descriptor layer = store.putBlob(
            media::kOciLayerGzip,
            rafs::test::tarOf({{"image/image.boot", boot_override.empty() ? boot : boot_override}}, true));
        layer.annotations[annotation::kNydusBootstrap] = "true";
        m.layers.push_back(layer);
        digest = store.putDocument("v1", media::kOciManifest, m.serialize()).digest;
    }
};

std::vector<std::string> entries(const std::filesystem::path& dir) {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace

TEST_CASE("registry images: the bootstrap kept by manifest digest, reused, refetched when damaged", "[registry]") {
    PushedImage image;
    TempDir state;
    rafsd::RegistryImages images(state.path() / "images");
    const std::string kept_name = "sha256-" + image.digest.substr(7);
    // A copy a dead rafsd was making: removed when the next one is kept.
    std::filesystem::create_directories(state.path() / "images/.tmp-999999999-abc");

    const rafsd::RegistryImage first = images.obtain(image.store, ImageReference::parse("h.test/app:v1"));
    CHECK(first.manifest_digest == image.digest);
    CHECK(first.bootstrap == state.path() / "images" / kept_name / "image.boot");
    CHECK(rafs::test::readFile(first.bootstrap) == image.boot);
    CHECK(entries(state.path() / "images") == std::vector<std::string>{kept_name});
    CHECK(entries(state.path() / "images" / kept_name) == std::vector<std::string>{"image.boot", "image.json"});
    CHECK(image.store.blob_reads == 1);

    // By tag again: the manifest is asked for (the tag may have moved), the bootstrap is not.
    CHECK(images.obtain(image.store, ImageReference::parse("h.test/app:v1")).bootstrap == first.bootstrap);
    CHECK(image.store.blob_reads == 1);
    CHECK(image.store.manifest_gets == 2);
    // By digest: nothing asked at all (a restarted rafsd while the registry is away).
    CHECK(images.obtain(image.store, ImageReference::parse("h.test/app@" + image.digest)).bootstrap == first.bootstrap);
    CHECK(image.store.manifest_gets == 2);

    // A damaged copy is fetched again.
    std::vector<uint8_t> damaged = image.boot;
    damaged[damaged.size() - 1] ^= 1;
    rafs::test::writeFile(first.bootstrap.string(), damaged);
    CHECK(rafs::test::readFile(images.obtain(image.store, ImageReference::parse("h.test/app@" + image.digest)).bootstrap) ==
          image.boot);
    CHECK(image.store.blob_reads == 2);
}

TEST_CASE("registry images: a bad image leaves nothing in the state dir", "[registry]") {
    TempDir state;
    rafsd::RegistryImages images(state.path() / "images");
    PushedImage missing_blob(false);
    CHECK_THROWS_WITH(images.obtain(missing_blob.store, ImageReference::parse("h.test/app:v1")),
                      Contains("h.test/app:v1: the bootstrap reads blob " + missing_blob.blob_id) &&
                          Contains("not a layer of the image's manifest"));
    PushedImage garbage(true, std::vector<uint8_t>(8192, 0));
    CHECK_THROWS_WITH(images.obtain(garbage.store, ImageReference::parse("h.test/app:v1")),
                      Contains("h.test/app:v1 (image/image.boot)") && Contains("not a RAFS v6 bootstrap"));
    CHECK_THROWS_WITH(images.obtain(garbage.store, ImageReference::parse("h.test/app:v2")), Contains("no such manifest"));
    CHECK(entries(state.path() / "images").empty());
}

TEST_CASE("registry images: alongside runs with the layers while the bootstrap is fetched, not for a kept copy",
          "[registry]") {
    PushedImage image;
    TempDir state;
    rafsd::RegistryImages images(state.path() / "images");
    std::vector<std::vector<std::string>> calls;
    auto alongside = [&](const RafsLayers& layers) { calls.push_back(layers.blobIds()); };
    images.obtain(image.store, ImageReference::parse("h.test/app:v1"), alongside);
    CHECK(calls == std::vector<std::vector<std::string>>{{image.blob_id}});
    images.obtain(image.store, ImageReference::parse("h.test/app:v1"), alongside);
    CHECK(calls.size() == 1);

    // What it throws fails the obtain, and nothing is kept.
    TempDir other;
    rafsd::RegistryImages failing(other.path() / "images");
    CHECK_THROWS_WITH(failing.obtain(image.store, ImageReference::parse("h.test/app:v1"),
                                     [](const RafsLayers&) { rafs::fail("blob gone"); }),
                      Contains("blob gone"));
    CHECK(entries(other.path() / "images").empty());
}

TEST_CASE("registry images: kept copies listed, renewed on reuse, forgotten; the collector's view of them", "[registry]") {
    PushedImage image;
    TempDir state;
    rafsd::RegistryImages images(state.path() / "images");
    CHECK(images.list().empty());
    const rafsd::RegistryImage kept = images.obtain(image.store, ImageReference::parse("h.test/app:v1"));
    const std::filesystem::path dir = kept.bootstrap.parent_path();
    std::vector<rafsd::RegistryImages::KeptCopy> copies = images.list();
    REQUIRE(copies.size() == 1);
    CHECK(copies[0].manifest_digest == image.digest);
    CHECK(copies[0].bytes >= image.boot.size());

    // Reuse renews the time of last use.
    const auto old = std::filesystem::file_time_type::clock::now() - std::chrono::hours(2);
    std::filesystem::last_write_time(dir, old);
    const int64_t before = images.list().at(0).last_use;
    images.obtain(image.store, ImageReference::parse("h.test/app@" + image.digest));
    CHECK(images.list().at(0).last_use >= before + 7000);

    // The collector's layout: not while a mount table lists the manifest, nor within keep_recent.
    rafsd::KeptImageCopies layout(images, state.path(), std::chrono::seconds(60));
    CHECK(layout.list({}).empty());  // just reused
    std::filesystem::last_write_time(dir, old);
    rafsd::saveMounts(rafsd::servedMountTable(state.path()),
                      {{"fanotify", kept.bootstrap, "/mnt/a", "", "", std::nullopt, "h.test/app:v1", image.digest}});
    CHECK(layout.list({}).empty());  // mounted by rafsd serve
    rafsd::saveMounts(rafsd::servedMountTable(state.path()), {});
    rafsd::saveMounts(rafsd::imageMountTable(state.path(), 4242),
                      {{"fscache", kept.bootstrap, "/mnt/b", "fsid", "", std::nullopt, "h.test/app:v1", image.digest}});
    CHECK(layout.list({}).empty());  // mounted by a rafsd mount
    std::filesystem::remove(rafsd::imageMountTable(state.path(), 4242));
    CHECK(layout.list({rafsd::KeptImageCopies::inUseKey(image.digest)}).empty());  // a mount on its way
    std::vector<rafsd::UnusedCache> unused = layout.list({});
    REQUIRE(unused.size() == 1);
    CHECK(unused[0].name == "bootstrap of image " + image.digest);
    CHECK(unused[0].bytes == copies[0].bytes);
    unused[0].remove();
    CHECK(entries(state.path() / "images").empty());
    CHECK(images.list().empty());
    // Gone: the next mount fetches it again.
    CHECK(image.store.blob_reads == 1);
    CHECK(rafs::test::readFile(images.obtain(image.store, ImageReference::parse("h.test/app@" + image.digest)).bootstrap) ==
          image.boot);
    CHECK(image.store.blob_reads == 2);
    images.forget("sha256:" + std::string(64, '0'));  // nothing kept: nothing to do

    // A table that cannot be read: the layout refuses to guess (the collector logs it).
    std::filesystem::last_write_time(images.imageDir(image.digest), old);
    std::ofstream(rafsd::servedMountTable(state.path())) << "{";
    CHECK_THROWS_WITH(layout.list({}), Contains("mounts.json"));
}
