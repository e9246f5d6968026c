#include "registry/ImageResolver.h"

#include "format/Error.h"
#include "registry/ImageStore.h"
#include "registry/LayoutLock.h"
#include "tests/unit/MemoryImageStore.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

using namespace registry;
using Catch::Matchers::Contains;
using Catch::Matchers::EndsWith;
using nlohmann::json;

namespace {

const Platform kAmd64 = Platform::parse("linux/amd64");

Descriptor descriptorOf(std::string_view media_type, const std::string& bytes) {
    Descriptor d;
    d.media_type = media_type;
    d.digest = sha256Digest(bytes);
    d.size = bytes.size();
    return d;
}

// A manifest of one layer: a Nydus bootstrap layer (RAFS) or a tar+gzip one (ordinary OCI).
Descriptor putImage(rafs::test::MemoryImageStore& store, const std::string& tag, bool rafs, char seed) {
    const Descriptor config = store.putBlob(media::kOciConfig, std::vector<uint8_t>(8, static_cast<uint8_t>(seed)));
    Descriptor layer = store.putBlob(media::kOciLayerGzip, std::vector<uint8_t>(16, static_cast<uint8_t>(seed)));
    if (rafs) layer.annotations[annotation::kNydusBootstrap] = "true";
    Manifest m;
    m.media_type = media::kOciManifest;
    m.config = config;
    m.layers = {layer};
    return store.putDocument(tag, media::kOciManifest, m.serialize());
}

// An index entry for `d` on `platform`, marked as nydusify marks RAFS images when `mark`.
Descriptor entry(Descriptor d, const std::string& platform, bool mark) {
    d.platform = Platform::parse(platform);
    if (mark) d.artifact_type = media::kNydusManifestArtifact;
    return d;
}

void putIndex(rafs::test::MemoryImageStore& store, const std::string& tag, std::vector<Descriptor> entries) {
    Index index;
    index.media_type = media::kOciIndex;
    index.manifests = std::move(entries);
    store.putDocument(tag, media::kOciIndex, index.serialize());
}

}  // namespace

TEST_CASE("resolver: a manifest named directly, of the kind asked for or refused", "[registry]") {
    rafs::test::MemoryImageStore store;
    const Descriptor rafs = putImage(store, "rafs", true, 1);
    putImage(store, "plain", false, 2);
    const ResolvedManifest r = resolveManifest(store, "rafs", kAmd64, ImageKind::Rafs, "h/app:rafs");
    CHECK(r.fetched.digest == rafs.digest);
    CHECK(r.manifest.isRafs());
    CHECK_FALSE(r.platform);
    CHECK_THROWS_WITH(resolveManifest(store, "plain", kAmd64, ImageKind::Rafs, "h/app:plain"),
                      Contains("h/app:plain: the image is an ordinary OCI image") && Contains("`mkrafs convert` makes one"));
    CHECK_THROWS_WITH(resolveManifest(store, "rafs", kAmd64, ImageKind::Original, "h/app:rafs"),
                      Contains("is a RAFS image already"));
    CHECK_THROWS_WITH(resolveManifest(store, "nope", kAmd64, ImageKind::Rafs, "h/app:nope"), Contains("no such manifest"));
}

TEST_CASE("resolver: an index narrowed to the platform and the kind", "[registry]") {
    rafs::test::MemoryImageStore store;
    const Descriptor plain_amd = putImage(store, "", false, 1);
    const Descriptor rafs_amd = putImage(store, "", true, 2);
    const Descriptor rafs_arm = putImage(store, "", true, 3);
    putIndex(store, "merged", {entry(plain_amd, "linux/amd64", false), entry(rafs_arm, "linux/arm64", true),
                               entry(rafs_amd, "linux/amd64", true)});
    ResolvedManifest r = resolveManifest(store, "merged", kAmd64, ImageKind::Rafs, "m");
    CHECK(r.fetched.digest == rafs_amd.digest);
    CHECK(r.platform->str() == "linux/amd64");
    CHECK(resolveManifest(store, "merged", Platform::parse("linux/arm64"), ImageKind::Rafs, "m").fetched.digest ==
          rafs_arm.digest);
    CHECK(resolveManifest(store, "merged", kAmd64, ImageKind::Original, "m").fetched.digest == plain_amd.digest);

    // Older or other builders leave the RAFS entry unmarked: its last layer tells.
    putIndex(store, "unmarked", {entry(rafs_amd, "linux/amd64", false)});
    CHECK(resolveManifest(store, "unmarked", kAmd64, ImageKind::Rafs, "u").fetched.digest == rafs_amd.digest);
    putIndex(store, "plain-only", {entry(plain_amd, "linux/amd64", false)});
    CHECK_THROWS_WITH(resolveManifest(store, "plain-only", kAmd64, ImageKind::Rafs, "p"),
                      Contains("p: the image for linux/amd64 is an ordinary OCI image"));
    // Marked, but its last layer is no bootstrap: refused rather than mounted.
    putIndex(store, "mismarked", {entry(plain_amd, "linux/amd64", true)});
    CHECK_THROWS_WITH(resolveManifest(store, "mismarked", kAmd64, ImageKind::Rafs, "x"), Contains("ordinary OCI image"));

    putIndex(store, "arm-only", {entry(rafs_arm, "linux/arm64", true), entry(rafs_arm, "linux/arm64", false)});
    CHECK_THROWS_WITH(resolveManifest(store, "arm-only", kAmd64, ImageKind::Rafs, "a"),
                      "a: no manifest for linux/amd64 in the index (it has: linux/arm64)");
    putIndex(store, "empty", {});
    CHECK_THROWS_WITH(resolveManifest(store, "empty", kAmd64, ImageKind::Rafs, "e"),
                      "e: no manifest for linux/amd64 in the index (it has: none)");

    // Variants as containerd normalises them: arm64/v8 is arm64, arm is arm/v7.
    const Descriptor plain_v7 = putImage(store, "", false, 4);
    const Descriptor plain_v6 = putImage(store, "", false, 5);
    putIndex(store, "variants", {entry(plain_amd, "linux/arm64", false), entry(plain_v6, "linux/arm/v6", false),
                                 entry(plain_v7, "linux/arm/v7", false)});
    CHECK(resolveManifest(store, "variants", Platform::parse("linux/arm64/v8"), ImageKind::Original, "v").fetched.digest ==
          plain_amd.digest);
    CHECK(resolveManifest(store, "variants", Platform::parse("linux/arm"), ImageKind::Original, "v").fetched.digest ==
          plain_v7.digest);

    // BuildKit's attestation manifests are no platform's image, and --all-platforms skips them.
    Descriptor attestation = entry(plain_v6, "unknown/unknown", false);
    attestation.annotations["vnd.docker.reference.type"] = "attestation-manifest";
    putIndex(store, "attested", {entry(plain_amd, "linux/amd64", false), attestation});
    const std::vector<ResolvedManifest> all = resolveAllPlatforms(store, "attested", ImageKind::Original, "t");
    REQUIRE(all.size() == 1);
    CHECK(all[0].fetched.digest == plain_amd.digest);
}

// The platform of an index entry is optional (image-spec image-index.md): containerd then reads the
// image's config, and so does the resolver, once no entry names the platform asked for.
TEST_CASE("resolver: an index entry of no platform is for the one its config names", "[registry]") {
    rafs::test::MemoryImageStore store;
    auto image = [&](const std::string& config_json) {
        Manifest m;
        m.media_type = media::kOciManifest;
        m.config = store.putBlob(media::kOciConfig, std::vector<uint8_t>(config_json.begin(), config_json.end()));
        m.layers = {store.putBlob(media::kOciLayerGzip, std::vector<uint8_t>(16, 7))};
        return store.putDocument("", media::kOciManifest, m.serialize());
    };
    const Descriptor arm = image(R"({"os":"linux","architecture":"arm","variant":"v7"})");
    const Descriptor amd = image(R"({"os":"linux","architecture":"amd64"})");
    // One whose config is not there: named in an error, passed over when another entry matches.
    Manifest lost;
    lost.media_type = media::kOciManifest;
    lost.config = descriptorOf(media::kOciConfig, "{\"missing\":true}");
    const Descriptor broken = store.putDocument("", media::kOciManifest, lost.serialize());
    putIndex(store, "bare", {broken, arm, amd});
    const ResolvedManifest r = resolveManifest(store, "bare", kAmd64, ImageKind::Original, "b");
    CHECK(r.fetched.digest == amd.digest);
    REQUIRE(r.platform);
    CHECK(r.platform->str() == "linux/amd64");
    CHECK(resolveManifest(store, "bare", Platform::parse("linux/arm"), ImageKind::Original, "b").fetched.digest ==
          arm.digest);
    CHECK_THROWS_WITH(resolveManifest(store, "bare", Platform::parse("linux/s390x"), ImageKind::Original, "b"),
                      Contains("b: no manifest for linux/s390x in the index (it has: " + broken.digest +
                               " of no platform, whose config cannot be read (") &&
                          Contains("linux/arm/v7 (by its config), linux/amd64 (by its config))"));
    // An index inside the index is not followed, and the error says so.
    Descriptor inner = store.putDocument("", media::kOciIndex, R"({"schemaVersion":2,"manifests":[]})");
    inner.platform = kAmd64;
    putIndex(store, "nested", {inner});
    CHECK_THROWS_WITH(resolveManifest(store, "nested", kAmd64, ImageKind::Original, "n"),
                      "n: no manifest for linux/amd64 in the index (it has: linux/amd64 (an index: not followed))");
}

TEST_CASE("resolver: an index entry must be a manifest, and be the document it names", "[registry]") {
    rafs::test::MemoryImageStore store;
    const Descriptor inner = store.putDocument("", media::kOciIndex, R"({"schemaVersion":2,"manifests":[]})");
    CHECK_THROWS_WITH(fetchEntry(store, inner, "n"), Contains("is a application/vnd.oci.image.index.v1+json, not an image manifest"));
    store.putDocument("odd", "text/plain", "hello");
    CHECK_THROWS_WITH(resolveManifest(store, "odd", kAmd64, ImageKind::Rafs, "o"),
                      "o: media type 'text/plain' is neither an image index nor a manifest");
}

// Each piece is one request, bounded by the transport's timeout: a bootstrap layer of tens of MB on
// a slow link arrives piece by piece instead of timing out whole, attempt after attempt.
TEST_CASE("a verified blob is read in pieces of 4 MiB, and checked whole", "[registry]") {
    rafs::test::MemoryImageStore store;
    std::vector<uint8_t> bytes(9 << 20);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
    const registry::Descriptor blob = store.putBlob("application/octet-stream", bytes);
    CHECK(registry::readVerifiedBlob(store, blob, 16 << 20, "layer") == bytes);
    CHECK(store.blob_reads == 3);
    CHECK_THROWS_WITH(registry::readVerifiedBlob(store, blob, 8 << 20, "layer"),
                      "layer " + blob.digest + " has size 9437184 (expected 1 to 8388608 bytes)");
}

// A mirror's damaged copy of a bootstrap layer or config is not the blob: the registry behind it,
// or the next mirror, may have it right.
TEST_CASE("a verified blob that fails its digest is read again from the next server", "[registry]") {
    rafs::test::MemoryImageStore store;
    const std::vector<uint8_t> bytes(5 << 20, 7);
    const registry::Descriptor blob = store.putBlob("application/octet-stream", bytes);
    store.server_count = 3;
    store.damaged = 2;
    CHECK(registry::readVerifiedBlob(store, blob, 16 << 20, "layer") == bytes);
    CHECK(store.serving == 2);
    CHECK(store.blob_reads == 6);

    store.serving = 0;
    store.damaged = 3;
    CHECK_THROWS_WITH(registry::readVerifiedBlob(store, blob, 16 << 20, "layer"),
                      Contains("layer " + blob.digest + ": digest mismatch: its bytes hash to sha256:") &&
                          EndsWith(" (as did the copy from mem://server-0, mem://server-1)"));
    CHECK(store.serving == 2);

    // One server: nothing else to try, and nothing distrusted.
    store.serving = 0;
    store.server_count = 1;
    store.damaged = 1;
    CHECK_THROWS_WITH(registry::readVerifiedBlob(store, blob, 16 << 20, "layer"),
                      Contains("digest mismatch") && !Contains("as did the copy"));
    CHECK(store.serving == 0);
}

// A layout holding an index under a tag names its platforms' manifests only as blobs (skopeo copy
// --all, mkrafs convert --all-platforms): they are found by digest.
TEST_CASE("an OCI layout's manifests behind a tagged index resolve by digest", "[registry]") {
    const rafs::test::TempDir dir;
    OciLayoutStore layout(dir.path() / "layout", true);
    Manifest m;
    m.media_type = media::kOciManifest;
    const std::string config = "{}";
    m.config = descriptorOf(media::kOciConfig, config);
    const std::string layer = "not really a tar";
    m.layers = {descriptorOf(media::kOciLayerGzip, layer)};
    const std::string manifest = m.serialize();
    layout.putManifest({}, media::kOciManifest, manifest);  // a blob only, in no index.json entry
    Index index;
    index.media_type = media::kOciIndex;
    index.manifests = {entry(descriptorOf(media::kOciManifest, manifest), "linux/amd64", false)};
    layout.putManifest("multi", media::kOciIndex, index.serialize());

    const ResolvedManifest resolved = resolveManifest(layout, "multi", kAmd64, ImageKind::Original, "layout:multi");
    CHECK(resolved.fetched.digest == sha256Digest(manifest));
    CHECK(resolved.manifest.layers.size() == 1);
    CHECK_THROWS_WITH(layout.manifest("sha256:" + std::string(64, '0')), Contains("no such manifest"));
    CHECK_THROWS_WITH(layout.manifest("other"), Contains("no such manifest"));
}

TEST_CASE("an OCI layout's one untagged manifest is what oci:DIR names", "[registry]") {
    const rafs::test::TempDir dir;
    const std::filesystem::path path = dir.path() / "layout";
    OciLayoutStore writer(path, true);
    const std::string manifest = R"({"schemaVersion":2})";
    writer.putManifest({}, media::kOciManifest, manifest);
    // As `skopeo copy ... oci:DIR` writes it: one entry, no ref.name.
    auto index_of = [&](std::vector<Descriptor> entries) {
        Index index;
        index.media_type = media::kOciIndex;
        index.manifests = std::move(entries);
        std::ofstream(path / "index.json") << index.serialize();
    };
    index_of({descriptorOf(media::kOciManifest, manifest)});
    CHECK(OciLayoutStore(path, false, {}, true).manifest("latest").digest == sha256Digest(manifest));
    // Named: oci:DIR:latest is a tag like any other.
    CHECK_THROWS_WITH(OciLayoutStore(path, false).manifest("latest"), Contains("no such manifest"));
    // Two untagged, or the one tagged otherwise: none is the image.
    index_of({descriptorOf(media::kOciManifest, manifest), descriptorOf(media::kOciManifest, manifest)});
    CHECK_THROWS_WITH(OciLayoutStore(path, false, {}, true).manifest("latest"), Contains("no such manifest"));
    Descriptor tagged = descriptorOf(media::kOciManifest, manifest);
    tagged.annotations[annotation::kRefName] = "v1";
    index_of({tagged});
    CHECK_THROWS_WITH(OciLayoutStore(path, false, {}, true).manifest("latest"), Contains("no such manifest"));
}

// index.json is edited by hand and by many tools: a tag given to two manifests names neither (skopeo
// takes the first, umoci refuses), and a size that is not the manifest's is refused as a digest is.
TEST_CASE("an OCI layout's tag given twice, or a manifest of another size, is refused", "[registry]") {
    const rafs::test::TempDir dir;
    const std::filesystem::path path = dir.path() / "layout";
    OciLayoutStore writer(path, true);
    const std::string first = R"({"schemaVersion":2})";
    const std::string second = R"({"schemaVersion":2,"layers":[]})";
    writer.putManifest({}, media::kOciManifest, first);
    writer.putManifest({}, media::kOciManifest, second);
    auto tagged = [](const std::string& manifest) {
        Descriptor d = descriptorOf(media::kOciManifest, manifest);
        d.annotations[annotation::kRefName] = "dup";
        return d;
    };
    auto index_of = [&](std::vector<Descriptor> entries) {
        Index index;
        index.media_type = media::kOciIndex;
        index.manifests = std::move(entries);
        std::ofstream(path / "index.json") << index.serialize();
    };
    index_of({tagged(first), tagged(second)});
    CHECK_THROWS_WITH(OciLayoutStore(path, false).manifest("dup"),
                      Contains(":dup: ambiguous: index.json gives this tag to " + sha256Digest(first) + " and " +
                               sha256Digest(second)));
    index_of({tagged(first), tagged(first)});  // the same manifest twice: it is the one
    CHECK(OciLayoutStore(path, false).manifest("dup").digest == sha256Digest(first));
    Descriptor wrong = tagged(first);
    wrong.size += 3;
    index_of({wrong});
    CHECK_THROWS_WITH(OciLayoutStore(path, false).manifest("dup"),
                      Contains("index.json gives manifest " + sha256Digest(first) + " a size of 22 bytes; it has 19"));
}

// Two mkrafs writing into one layout at once: each index.json edit is a read, change and rename,
// so without the lock one loses the other's tag. An flock holds between threads as between
// processes: each LayoutLock opens the directory afresh.
TEST_CASE("OCI layout writers in parallel keep every tag", "[registry]") {
    const rafs::test::TempDir dir;
    const std::filesystem::path path = dir.path() / "layout";
    constexpr int kWriters = 6;
    constexpr int kTags = 15;
    std::atomic<int> created{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
        writers.emplace_back([&path, &created, w] {
            const LayoutLock lock(path, {});
            created += lock.created() ? 1 : 0;
            OciLayoutStore layout(path, true);  // the first creates the layout
            for (int t = 0; t < kTags; ++t) {
                // The same manifest under every tag: the writers also write the same blob at once.
                layout.putManifest(fmt::format("w{}-t{}", w, t), media::kOciManifest, R"({"schemaVersion":2})");
            }
        });
    }
    for (std::thread& t : writers) t.join();
    std::ifstream in(path / "index.json");
    const Index index = Index::parse(std::string(std::istreambuf_iterator<char>(in), {}), "", "index.json");
    std::set<std::string> tags;
    for (const Descriptor& d : index.manifests) tags.insert(d.annotations.at(annotation::kRefName));
    // None if the one that made the directory locked it only after another had filled it.
    CHECK(created <= 1);
    CHECK(tags.size() == kWriters * kTags);
    CHECK(index.manifests.size() == kWriters * kTags);
    for (const auto& entry : std::filesystem::recursive_directory_iterator(path)) {
        CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
    }
}

TEST_CASE("an OCI layout's lock says who made the directory, and makes a second writer wait", "[registry]") {
    const rafs::test::TempDir dir;
    const std::filesystem::path path = dir.path() / "made" / "layout";
    std::optional<LayoutLock> first;
    first.emplace(path, [] { FAIL("nobody holds it yet"); });
    CHECK(first->created());
    std::atomic<bool> waited{false}, locked{false};
    std::thread second([&] {
        const LayoutLock lock(path, [&] { waited = true; });
        locked = true;
        CHECK_FALSE(lock.created());  // it exists already
    });
    for (int i = 0; i < 5000 && !waited; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    CHECK(waited);
    CHECK_FALSE(locked);
    first.reset();
    second.join();
    CHECK(locked);
    // Made again by a writer that failed and removed it while another waited: the waiter locks the
    // new directory, not the removed one.
    first.emplace(path, [] {});
    std::atomic<bool> third_waits{false};
    std::thread third([&] {
        const LayoutLock lock(path, [&] { third_waits = true; });
        CHECK(lock.created());
    });
    for (int i = 0; i < 5000 && !third_waits; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    CHECK(third_waits);
    std::filesystem::remove_all(path);
    first.reset();
    third.join();
}

TEST_CASE("an OCI layout's lock names what keeps it from a directory", "[registry]") {
    const rafs::test::TempDir dir;
    std::filesystem::create_symlink(dir.path() / "nowhere", dir.path() / "dangling");
    CHECK_THROWS_WITH(LayoutLock(dir.path() / "dangling", {}),
                      "oci:" + (dir.path() / "dangling").string() + ": a symbolic link to nothing");
    std::ofstream(dir.path() / "file") << "x";
    CHECK_THROWS_WITH(LayoutLock(dir.path() / "file" / "layout", {}),
                      Contains("oci:" + (dir.path() / "file" / "layout").string() + ": cannot create " +
                               (dir.path() / "file").string()));
    CHECK_THROWS_WITH(LayoutLock(dir.path() / "file", {}),
                      "oci:" + (dir.path() / "file").string() + ": cannot open: Not a directory");
}

TEST_CASE("a manifest tagged in an OCI layout leaves the other entries as they were", "[registry]") {
    const rafs::test::TempDir dir;
    const std::filesystem::path path = dir.path() / "layout";
    OciLayoutStore layout(path, true);
    const std::string digest = "sha256:" + std::string(64, 'a');
    // Fields Descriptor does not keep: another image's urls and os.version, the index's own.
    const json other = {{"mediaType", media::kOciManifest},
                        {"digest", digest},
                        {"size", 10},
                        {"urls", {"https://example.invalid/blob"}},
                        {"platform", {{"os", "windows"}, {"architecture", "amd64"}, {"os.version", "10.0.17763.1"}}},
                        {"annotations", {{annotation::kRefName, "win"}}}};
    json replaced = other;
    replaced["annotations"][annotation::kRefName] = "new";
    const json index = {{"schemaVersion", 2}, {"manifests", {other, replaced}}, {"artifactType", "x/kept"}};
    std::ofstream(path / "index.json") << index.dump();

    const std::string manifest = R"({"schemaVersion":2})";
    layout.putManifest("new", media::kOciManifest, manifest);
    std::ifstream in(path / "index.json");
    const json written = json::parse(in);
    CHECK(written.value("artifactType", "") == "x/kept");
    REQUIRE(written["manifests"].size() == 2);
    CHECK(written["manifests"][0] == other);
    CHECK(written["manifests"][1]["digest"] == sha256Digest(manifest));
    CHECK(written["manifests"][1]["annotations"][annotation::kRefName] == "new");
    CHECK(layout.manifest("new").digest == sha256Digest(manifest));
}
