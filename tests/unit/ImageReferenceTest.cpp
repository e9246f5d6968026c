#include "registry/ImageReference.h"

#include "format/Error.h"

#include <catch2/catch.hpp>

using registry::ImageReference;
using Catch::Matchers::Contains;

namespace {
const std::string kDigest = "sha256:" + std::string(64, 'a');
}

TEST_CASE("image references: host, repository, tag and digest", "[registry]") {
    ImageReference r = ImageReference::parse("127.0.0.1:5000/team/app:v1.2");
    CHECK(r.kind == ImageReference::Kind::Registry);
    CHECK(r.host == "127.0.0.1:5000");
    CHECK(r.repository == "team/app");
    CHECK(r.tag == "v1.2");
    CHECK(r.digest.empty());
    CHECK(r.reference() == "v1.2");
    CHECK(r.str() == "127.0.0.1:5000/team/app:v1.2");

    r = ImageReference::parse("localhost/app");
    CHECK(r.host == "localhost");
    CHECK(r.tag == "latest");
    CHECK(r.str() == "localhost/app:latest");

    r = ImageReference::parse("reg.example:443/a/b/c@" + kDigest);
    CHECK(r.repository == "a/b/c");
    CHECK(r.tag.empty());
    CHECK(r.reference() == kDigest);
    CHECK(r.str() == "reg.example:443/a/b/c@" + kDigest);

    // Tag and digest: the digest is what is asked for.
    r = ImageReference::parse("h:1/app:v1@" + kDigest);
    CHECK(r.tag == "v1");
    CHECK(r.reference() == kDigest);
    CHECK(ImageReference::parse(r.str()).reference() == kDigest);

    r = ImageReference::parse("[::1]:5000/app:x");
    CHECK(r.host == "[::1]:5000");

    r = ImageReference::parse("oci:/images/layout:v2");
    CHECK(r.kind == ImageReference::Kind::Layout);
    CHECK(r.layout_dir == "/images/layout");
    CHECK(r.tag == "v2");
    CHECK(!r.tag_defaulted);
    CHECK(ImageReference::parse("oci:dir").tag == "latest");
    CHECK(ImageReference::parse("oci:dir").tag_defaulted);
    CHECK(ImageReference::parse("h.test/app").tag_defaulted);
    CHECK(!ImageReference::parse("h.test/app:latest").tag_defaulted);
    CHECK(!ImageReference::parse("h.test/app@" + kDigest).tag_defaulted);
}

TEST_CASE("image references: what is wrong is named", "[registry]") {
    CHECK_THROWS_WITH(ImageReference::parse("app"), Contains("expected HOST[:PORT]/REPOSITORY"));
    CHECK_THROWS_WITH(ImageReference::parse("/tmp/missing.boot"), Contains("'' is not a host[:port]"));
    CHECK_THROWS_WITH(ImageReference::parse("bad_host/app"), Contains("'bad_host' is not a host[:port]"));
    CHECK_THROWS_WITH(ImageReference::parse("h.test/App"), Contains("'App' is not a repository name"));
    // Docker's rule for a host: a '.' or ':', or localhost; else a mistyped path, or a Hub name.
    // Only for what a user typed: a reference an earlier rafsd stored still reads.
    CHECK_THROWS_WITH(ImageReference::parseTyped("img/nothere.boot"), Contains("'img' is not a registry host"));
    CHECK_THROWS_WITH(ImageReference::parseTyped("library/ubuntu:22.04"), Contains("'library' is not a registry host"));
    CHECK(ImageReference::parse("registry/app").host == "registry");
    CHECK(ImageReference::parseTyped("localhost/app").host == "localhost");
    CHECK(ImageReference::parseTyped("localhost:5000/app").host == "localhost:5000");
    CHECK(ImageReference::parseTyped("oci:layout").kind == ImageReference::Kind::Layout);
    CHECK_THROWS_WITH(ImageReference::ofArgument("img/nothere.boot"),
                      "img/nothere.boot: no such file, and not an image reference (image 'img/nothere.boot': 'img' is "
                      "not a registry host (no '.' or ':', not localhost))");
    CHECK_THROWS_WITH(ImageReference::parse("h.test/app:"), Contains("'' is not a valid tag"));
    CHECK_THROWS_WITH(ImageReference::parse("h.test/app:-x"), Contains("'-x' is not a valid tag"));
    CHECK_THROWS_WITH(ImageReference::parse("h.test/app@sha256:abc"), Contains("is not sha256:<64 lowercase hex digits>"));
    CHECK_THROWS_WITH(ImageReference::parse("h.test/app@" + std::string("sha256:") + std::string(64, 'A')),
                      Contains("lowercase"));
    CHECK_THROWS_WITH(ImageReference::parse("oci:"), Contains("oci: needs a directory"));
    CHECK_THROWS_WITH(ImageReference::parse("oci:d:a/b"), Contains("bad tag"));
    CHECK_FALSE(ImageReference::looksLikeReference("./image.boot"));
    CHECK(ImageReference::looksLikeReference("127.0.0.1:5000/app"));
}
