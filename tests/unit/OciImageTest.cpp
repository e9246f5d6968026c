#include "registry/OciImage.h"

#include "format/Error.h"

#include <catch2/catch.hpp>

using namespace registry;
using Catch::Matchers::Contains;

namespace {

const std::string kA = "sha256:" + std::string(64, 'a');
const std::string kB = "sha256:" + std::string(64, 'b');

std::string manifestJson(const std::string& layers) {
    return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
           R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" + kA + R"(","size":10},)"
           R"("layers":[)" + layers + "]}";
}

std::string layer(const std::string& type, const std::string& digest, const std::string& annotations = "") {
    return R"({"mediaType":")" + type + R"(","digest":")" + digest + R"(","size":5)" +
           (annotations.empty() ? "" : R"(,"annotations":)" + annotations) + "}";
}

}  // namespace

TEST_CASE("manifests: parsed with every field checked; a RAFS image by its last layer", "[registry]") {
    const std::string bootstrap =
        layer(std::string(media::kOciLayerGzip), kB, R"({"containerd.io/snapshot/nydus-bootstrap":"true"})");
    const Manifest m = Manifest::parse(manifestJson(layer(std::string(media::kNydusBlob), kA) + "," + bootstrap),
                                       media::kOciManifest, "img");
    REQUIRE(m.layers.size() == 2);
    CHECK(m.layers[0].media_type == media::kNydusBlob);
    CHECK(m.layers[1].hasAnnotation(annotation::kNydusBootstrap));
    CHECK(m.isRafs());
    CHECK(Manifest::parse(m.serialize(), media::kOciManifest, "again").serialize() == m.serialize());
    CHECK_FALSE(Manifest::parse(manifestJson(layer(std::string(media::kOciLayerGzip), kA)), "", "img").isRafs());
    CHECK_FALSE(Manifest::parse(manifestJson(""), "", "img").isRafs());
}

TEST_CASE("manifests: a malformed one is one error naming the field", "[registry]") {
    auto error = [](const std::string& doc, std::string_view served = media::kOciManifest) {
        try {
            Manifest::parse(doc, served, "img");
        } catch (const rafs::Error& e) {
            return std::string(e.what());
        }
        return std::string("(parsed)");
    };
    CHECK(error("{") == "img: not valid JSON");
    CHECK(error("[]") == "img: not a JSON object");
    CHECK(error(R"({"schemaVersion":1})") == "img: schemaVersion is not 2");
    CHECK(error(R"({"schemaVersion":2,"layers":[]})") == "img: no \"config\"");
    CHECK(error(manifestJson("")) == "(parsed)");
    CHECK(error(manifestJson(""), media::kDockerManifest) ==
          "img: served as application/vnd.docker.distribution.manifest.v2+json but says it is "
          "application/vnd.oci.image.manifest.v1+json");
    CHECK(error(manifestJson(layer("t", "sha256:xyz"))) ==
          "img: layers[0]: digest 'sha256:xyz' is not sha256:<64 lowercase hex digits>");
    CHECK(error(manifestJson(R"({"mediaType":"t","digest":")" + kA + R"(","size":-1})")) ==
          "img: layers[0]: \"size\" is not a non-negative integer");
    CHECK(error(manifestJson(layer("t", kA, R"({"k":1})"))) == "img: layers[0]: annotations[\"k\"] is not a string");
    CHECK(error(R"({"schemaVersion":2,"config":{"mediaType":"t","digest":")" + kA + R"(","size":1},"layers":{}})") ==
          "img: \"layers\" is not an array");
    CHECK(error(R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})", "") ==
          "img: media type 'application/vnd.oci.image.index.v1+json' is not an image manifest");
}

TEST_CASE("platforms and indexes", "[registry]") {
    const Platform p = Platform::parse("linux/arm64/v8");
    CHECK(p.str() == "linux/arm64/v8");
    CHECK(p.matches(Platform::parse("linux/arm64")));
    CHECK(Platform::parse("linux/arm64").matches(p));  // v8 is arm64's default, as containerd has it
    CHECK_FALSE(Platform::parse("linux/arm/v6").matches(Platform::parse("linux/arm")));  // arm is arm/v7
    CHECK_THROWS_WITH(Platform::parse("linux"), Contains("expected OS/ARCH"));
    CHECK_THROWS_WITH(Platform::parse("linux//v7"), Contains("expected OS/ARCH"));
    CHECK(Platform::host().os == "linux");

    const Index index = Index::parse(
        R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + kA +
            R"(","size":3,"platform":{"os":"linux","architecture":"amd64","os.features":["nydus.remoteimage.v1"]}}]})",
        "", "index.json");
    CHECK(index.media_type == media::kOciIndex);  // an OCI layout's index.json need not say
    REQUIRE(index.manifests.size() == 1);
    CHECK(index.manifests[0].platform->os_features == std::vector<std::string>{"nydus.remoteimage.v1"});
    CHECK_THROWS_WITH(Index::parse(R"({"manifests":[{"mediaType":"t","digest":")" + kA +
                                       R"(","size":1,"platform":{"os":"linux"}}]})",
                                   "", "ix"),
                      "ix: manifests[0]: platform: no \"architecture\"");
}

// What containerd's images package calls layers (images/mediatypes.go): each converts.
TEST_CASE("tar layers: OCI and Docker, plain, gzip and zstd, non-distributable and foreign", "[registry]") {
    for (std::string_view type : {"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
                                  "application/vnd.oci.image.layer.v1.tar+zstd",
                                  "application/vnd.oci.image.layer.nondistributable.v1.tar",
                                  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                                  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                                  "application/vnd.docker.image.rootfs.diff.tar",
                                  "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                  "application/vnd.docker.image.rootfs.diff.tar.zstd",
                                  "application/vnd.docker.image.rootfs.foreign.diff.tar",
                                  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}) {
        INFO(type);
        CHECK(media::isTarLayer(type));
    }
    CHECK_FALSE(media::isTarLayer(media::kNydusBlob));
    CHECK_FALSE(media::isTarLayer("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"));
    CHECK_FALSE(media::isTarLayer("application/vnd.oci.image.config.v1+json"));
}
