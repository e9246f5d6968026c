#include "daemon/snapshotter/OverlayMounts.h"
#include "daemon/snapshotter/SnapshotFilter.h"
#include "daemon/snapshotter/SnapshotStore.h"

#include "format/Error.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <fstream>

using Catch::Matchers::Contains;
using rafsd::Backing;
using rafsd::Snapshot;
using rafsd::SnapshotKind;

namespace {

Snapshot snapshot(uint64_t id, SnapshotKind kind, std::string parent, Backing backing = Backing::Directory) {
    Snapshot s;
    s.id = id;
    s.kind = kind;
    s.parent = std::move(parent);
    s.backing = backing;
    s.created_ns = s.updated_ns = 1000 + static_cast<int64_t>(id);
    if (backing == Backing::RafsImage) s.image = "127.0.0.1:5000/app@sha256:" + std::string(64, 'a');
    return s;
}

void write(const std::filesystem::path& path, const std::string& text) {
    std::ofstream(path) << text;
}

}  // namespace

TEST_CASE("snapshot store: what one instance wrote, the next reads back", "[snapshotter]") {
    rafs::test::TempDir dir;
    {
        rafsd::SnapshotStore store(dir.path());
        CHECK(store.all().empty());
        const uint64_t a = store.allocateId();
        const uint64_t b = store.allocateId();
        CHECK(b == a + 1);
        Snapshot blob = snapshot(a, SnapshotKind::Committed, "", Backing::RafsBlob);
        blob.labels["containerd.io/snapshot.ref"] = "sha256:1";
        store.put("sha256:1", blob);
        store.put("sha256:2", snapshot(b, SnapshotKind::Committed, "sha256:1", Backing::RafsImage));
        store.put("ns/3/ctr", snapshot(store.allocateId(), SnapshotKind::Active, "sha256:2"));
        store.rename("ns/3/ctr", "ns/4/done", snapshot(3, SnapshotKind::Committed, "sha256:2"));
    }
    rafsd::SnapshotStore store(dir.path());
    const auto all = store.all();
    REQUIRE(all.size() == 3);
    CHECK(all.at("sha256:1").labels.at("containerd.io/snapshot.ref") == "sha256:1");
    CHECK(all.at("sha256:2").backing == Backing::RafsImage);
    CHECK(all.at("sha256:2").image.starts_with("127.0.0.1:5000/app@sha256:"));
    CHECK(all.at("ns/4/done").kind == SnapshotKind::Committed);
    CHECK(store.allocateId() == 4);  // ids are never handed out twice
    const auto chain = store.chain("ns/4/done");
    REQUIRE(chain.size() == 3);
    CHECK(chain[0].first == "ns/4/done");
    CHECK(chain[2].first == "sha256:1");
    CHECK(store.hasChildren("sha256:2"));
    CHECK_FALSE(store.hasChildren("ns/4/done"));
    CHECK(store.fsDir(all.at("sha256:2")) == dir.path() / "mnt" / "2");
    CHECK(store.fsDir(all.at("ns/4/done")) == dir.path() / "snapshots" / "3" / "fs");
    store.erase("ns/4/done");
    CHECK_FALSE(rafsd::SnapshotStore(dir.path()).find("ns/4/done"));
    CHECK_FALSE(std::filesystem::exists(dir.path() / "snapshots.json.tmp"));
}

TEST_CASE("snapshot store: a change whose save fails is not made", "[snapshotter]") {
    rafs::test::TempDir dir;
    rafsd::SnapshotStore store(dir.path());
    store.put("a", snapshot(store.allocateId(), SnapshotKind::Active, ""));
    // The table's temporary file cannot be written (as on a full disk).
    std::filesystem::create_directories(dir.path() / "snapshots.json.tmp" / "blocker");
    CHECK_THROWS(store.put("b", snapshot(2, SnapshotKind::Active, "")));
    CHECK_THROWS(store.rename("a", "c", snapshot(1, SnapshotKind::Committed, "")));
    CHECK_THROWS(store.erase("a"));
    CHECK_THROWS(store.allocateId());
    const auto all = store.all();
    REQUIRE(all.size() == 1);
    CHECK(all.at("a").kind == SnapshotKind::Active);
    std::filesystem::remove_all(dir.path() / "snapshots.json.tmp");
    CHECK(store.allocateId() == 2);
    CHECK(rafsd::SnapshotStore(dir.path()).all().size() == 1);
}

TEST_CASE("snapshot store: a damaged table is refused naming the file", "[snapshotter]") {
    rafs::test::TempDir dir;
    const auto table = dir.path() / "snapshots.json";
    write(table, "{\"version\":1,\"next_id\":1,\"snapshots\":{");
    CHECK_THROWS_WITH(rafsd::SnapshotStore(dir.path()), Contains(table.string()));
    write(table, R"({"version":2,"next_id":1,"snapshots":{}})");
    CHECK_THROWS_WITH(rafsd::SnapshotStore(dir.path()), Contains("table version 2"));
    write(table, R"({"version":1,"next_id":2,"snapshots":{"a":{"id":1,"kind":"active","parent":"gone","labels":{},
                  "created":0,"updated":0,"backing":"directory"}}})");
    CHECK_THROWS_WITH(rafsd::SnapshotStore(dir.path()), Contains("parent gone which is not in the table"));
    write(table, R"({"version":1,"next_id":1,"snapshots":{"a":{"id":1,"kind":"active","parent":"","labels":{},
                  "created":0,"updated":0,"backing":"directory"}}})");
    CHECK_THROWS_WITH(rafsd::SnapshotStore(dir.path()), Contains("beyond next_id"));
    write(table, R"({"version":1,"next_id":2,"snapshots":{"a":{"id":1,"kind":"active","parent":"","labels":{},
                  "created":0,"updated":0,"backing":"rafs-image"}}})");
    CHECK_THROWS_WITH(rafsd::SnapshotStore(dir.path()), Contains("names no image"));
}

TEST_CASE("snapshot filter: containerd's syntax", "[snapshotter]") {
    Snapshot s = snapshot(1, SnapshotKind::Committed, "ns/1/parent");
    s.labels["containerd.io/snapshot.ref"] = "sha256:abc";
    s.labels["a"] = "x,y";
    const auto matches = [&](std::vector<std::string> filters) {
        return rafsd::SnapshotFilter(filters).matches("sha256:abc", s);
    };
    CHECK(matches({}));
    // What containerd's metadata store asks after a remote Prepare's ALREADY_EXISTS.
    CHECK(matches({R"(labels."containerd.io/snapshot.ref"==sha256:abc,parent=="ns/1/parent")"}));
    CHECK_FALSE(matches({R"(labels."containerd.io/snapshot.ref"==sha256:abc,parent=="")"}));
    CHECK(matches({"kind==committed", "name==nope"}));
    CHECK_FALSE(matches({"kind==active"}));
    CHECK(matches({"labels.a==\"x,y\""}));
    CHECK(matches({"labels.a"}));
    CHECK_FALSE(matches({"labels.b"}));
    CHECK(matches({"labels.b!=1"}));
    CHECK(matches({"name~=^sha256:"}));
    CHECK_FALSE(matches({"name~=^ns/"}));
    CHECK_THROWS_WITH(rafsd::SnapshotFilter({"size==1"}), Contains("unknown field 'size'"));
    CHECK_THROWS_WITH(rafsd::SnapshotFilter({"name=1"}), Contains("unknown operator at '=1'"));
    CHECK_THROWS_WITH(rafsd::SnapshotFilter({"labels.\"a==1"}), Contains("unterminated quote"));
    CHECK_THROWS_WITH(rafsd::SnapshotFilter({"name~=("}), Contains("not a regular expression"));
}

TEST_CASE("snapshot mounts: as containerd's overlayfs snapshotter makes them", "[snapshotter]") {
    using rafsd::snapshotMounts;
    const auto active_alone = snapshotMounts(SnapshotKind::Active, "/u", "/w", {});
    REQUIRE(active_alone.size() == 1);
    CHECK(active_alone[0].type == "bind");
    CHECK(active_alone[0].options == std::vector<std::string>{"rw", "rbind"});
    const auto view_one = snapshotMounts(SnapshotKind::View, "/u", "/w", {"/erofs"});
    CHECK((view_one[0].type == "bind" && view_one[0].source == "/erofs" && view_one[0].options[0] == "ro"));
    const auto view_two = snapshotMounts(SnapshotKind::View, "/u", "/w", {"/a", "/b"});
    CHECK((view_two[0].type == "overlay" && view_two[0].options == std::vector<std::string>{"lowerdir=/a:/b"}));
    const auto active = snapshotMounts(SnapshotKind::Active, "/u", "/w", {"/erofs", "/base"});
    CHECK(active[0].type == "overlay");
    CHECK(active[0].options == std::vector<std::string>{"workdir=/w", "upperdir=/u", "lowerdir=/erofs:/base"});
}
