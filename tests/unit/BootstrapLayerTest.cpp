#include "registry/BootstrapLayer.h"

#include "format/Error.h"
#include "registry/RafsLayers.h"
#include "tests/unit/MemoryImageStore.h"

#include <catch2/catch.hpp>

using namespace registry;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using rafs::test::tarOf;

namespace {

const std::vector<uint8_t> kBoot(5000, 0x5a);

std::string errorOf(const std::vector<uint8_t>& layer) {
    try {
        bootstrapFromLayer(layer, "L");
    } catch (const rafs::Error& e) {
        return e.what();
    }
    return "(read)";
}

}  // namespace

TEST_CASE("bootstrap layer: image/image.boot out of a gzip or plain tar", "[registry]") {
    const std::vector<uint8_t> other(100, 1);
    CHECK(bootstrapFromLayer(tarOf({{"image/other", other}, {"image/image.boot", kBoot}}, true), "L") == kBoot);
    CHECK(bootstrapFromLayer(tarOf({{"image/image.boot", kBoot}}, false), "L") == kBoot);
    CHECK(bootstrapFromLayer(tarOf({{"./image/image.boot", kBoot}}, true), "L") == kBoot);
}

TEST_CASE("bootstrap layer: a wrong one is one error naming it", "[registry]") {
    CHECK(errorOf(tarOf({{"image/other.boot", kBoot}}, true)) == "L: the bootstrap layer has no image/image.boot");
    CHECK(errorOf(tarOf({{"image/image.boot", {}}}, true)) ==
          "L: image/image.boot in the bootstrap layer has size 0 (expected 1 to 1073741824 bytes)");
    CHECK_THAT(errorOf(std::vector<uint8_t>(3000, 'x')), Contains("L: the bootstrap layer is not a tar"));
    std::vector<uint8_t> garbage = {0x1f, 0x8b, 8, 0};
    garbage.resize(4000, 0x33);
    CHECK_THAT(errorOf(garbage), StartsWith("L: the bootstrap layer is not"));
    // A gzip cut short: the member's data ends before its header's size.
    std::vector<uint8_t> cut = tarOf({{"image/image.boot", std::vector<uint8_t>(200000, 7)}}, false);
    cut.resize(cut.size() / 2);
    CHECK_THAT(errorOf(cut), Contains("L: ") && Contains("image/image.boot"));
}

TEST_CASE("bootstrap layer: fetched, checked against its descriptor", "[registry]") {
    rafs::test::MemoryImageStore store;
    const std::vector<uint8_t> layer = tarOf({{"image/image.boot", kBoot}}, true);
    Descriptor d = store.putBlob(media::kOciLayerGzip, layer);
    CHECK(fetchBootstrapLayer(store, d, "img") == kBoot);
    d.media_type = media::kDockerLayerGzip;
    CHECK(fetchBootstrapLayer(store, d, "img") == kBoot);

    Descriptor shorter = d;
    shorter.size -= 1;
    CHECK_THROWS_WITH(fetchBootstrapLayer(store, shorter, "img"), Contains("img: bootstrap layer " + d.digest) &&
                                                                      Contains("digest mismatch"));
    Descriptor longer = d;
    longer.size += 1;
    CHECK_THROWS_WITH(fetchBootstrapLayer(store, longer, "img"), Contains("shorter"));
    Descriptor empty = d;
    empty.size = 0;
    CHECK_THROWS_WITH(fetchBootstrapLayer(store, empty, "img"), Contains("has size 0"));
    Descriptor encrypted = d;
    encrypted.media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
    CHECK_THROWS_WITH(fetchBootstrapLayer(store, encrypted, "img"),
                      Contains("tar+gzip+encrypted, which rafs does not handle"));
    CHECK(store.blob_reads == 4);  // neither a size of 0 nor a bad type is fetched
}

TEST_CASE("RAFS layers: data blobs, then the bootstrap layer", "[registry]") {
    const std::string a = "sha256:" + std::string(64, 'a');
    const std::string b = "sha256:" + std::string(64, 'b');
    Manifest m;
    m.media_type = media::kOciManifest;
    m.layers = {{std::string(media::kNydusBlob), a, 10, {}, {}, {}},
                {std::string(media::kOciLayerGzip), b, 10, {{annotation::kNydusBootstrap, "true"}}, {}, {}}};
    const RafsLayers layers = RafsLayers::of(m, "img");
    CHECK(layers.bootstrap.digest == b);
    REQUIRE(layers.blobs.size() == 1);
    CHECK(layers.hasBlob(std::string(64, 'a')));
    CHECK_FALSE(layers.hasBlob(std::string(64, 'b')));

    Manifest tar_data = m;
    tar_data.layers[0].media_type = media::kOciLayerGzip;
    CHECK_THROWS_WITH(RafsLayers::of(tar_data, "img"),
                      "img: layer 0 (" + a + ") has media type application/vnd.oci.image.layer.v1.tar+gzip, which rafs "
                      "does not handle (expected application/vnd.oci.image.layer.nydus.blob.v1)");
    Manifest encrypted = m;
    encrypted.layers[0].annotations[annotation::kNydusEncryptedBlob] = "true";
    CHECK_THROWS_WITH(RafsLayers::of(encrypted, "img"), Contains("encrypted Nydus blob"));
    Manifest plain = m;
    plain.layers[1].annotations.clear();
    CHECK_THROWS_WITH(RafsLayers::of(plain, "img"), Contains("img: an ordinary OCI image") && Contains("mkrafs convert"));
}
