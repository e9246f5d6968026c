#include "daemon/api/MountTable.h"

#include "format/Error.h"
#include "tests/unit/ImageTestUtil.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

using rafsd::MountRecord;
using Catch::Matchers::Contains;

TEST_CASE("mount table: saved and loaded back, atomically replaced", "[mounts]") {
    rafs::test::TempDir dir;
    const std::filesystem::path table = dir.path() / "state/mounts.json";
    CHECK(rafsd::loadMounts(table).empty());  // none yet
    const std::vector<MountRecord> mounts = {
        {"fscache", "/images/a/image.boot", "/mnt/a", "rafs-a", "", std::nullopt, "", ""},
        {"fscache", "/images/b.blob", "/mnt/b", "fsid-b", "shared", "/images/blobs", "", "", true},
        {"fanotify", "/images/c/image.boot", "/mnt/c", "", "", "/images/c/blobs", "", ""},
        {"fanotify", "/state/images/sha256-ab/image.boot", "/mnt/d", "", "", std::nullopt, "127.0.0.1:5000/app:v1",
         "sha256:ab"},
        {"fanotify", "/state/images/sha256-cd/image.boot", "/store/aW1n/sha256:cd/diff", "", "", std::nullopt,
         "127.0.0.1:5000/app@sha256:cd", "sha256:cd", false, true},
        {"fanotify", "/images/e/image.boot", "/mnt/e", "", "", "/images/e/blobs", "", "", false, false, false, true},
        {"fscache", "/images/f/image.boot", "/mnt/f", "fsid-f", "", std::nullopt, "", "", false, false, true},
    };
    rafsd::saveMounts(table, mounts);  // creates state/
    CHECK(rafsd::loadMounts(table) == mounts);
    rafsd::saveMounts(table, {mounts[1]});
    CHECK(rafsd::loadMounts(table) == std::vector<MountRecord>{mounts[1]});
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(table.parent_path())) {
        names.push_back(e.path().filename().string());
    }
    CHECK(names == std::vector<std::string>{"mounts.json"});  // no temporary file left
}

TEST_CASE("mount table: a table of fscache mounts only, from before fanotify mounts were kept") {
    rafs::test::TempDir dir;
    const std::string table = dir / "table.json";
    const std::string old = R"({"version": 1, "mounts": [{"bootstrap": "/a", "mountpoint": "/m", "fsid": "f", "domain_id": ""}]})";
    rafs::test::writeFile(table, std::vector<uint8_t>(old.begin(), old.end()));
    CHECK(rafsd::loadMounts(table) == std::vector<MountRecord>{{"fscache", "/a", "/m", "f", "", std::nullopt, "", ""}});
}

TEST_CASE("mount table: a damaged or foreign file is refused with its name", "[mounts]") {
    rafs::test::TempDir dir;
    const std::string table = dir / "table.json";
    const std::string truncated = R"({"version": 1, "mounts": [{"bootstrap": "/a"})";
    rafs::test::writeFile(table, std::vector<uint8_t>(truncated.begin(), truncated.end()));
    CHECK_THROWS_WITH(rafsd::loadMounts(table), Contains(table) && Contains("not a table of mounts"));
    const std::string future = R"({"version": 2, "mounts": []})";
    rafs::test::writeFile(table, std::vector<uint8_t>(future.begin(), future.end()));
    CHECK_THROWS_WITH(rafsd::loadMounts(table), Contains("table version 2"));
    const std::string engine = R"({"version": 1, "mounts": [{"engine": "fuse", "bootstrap": "/a", "mountpoint": "/m", "fsid": "", "domain_id": ""}]})";
    rafs::test::writeFile(table, std::vector<uint8_t>(engine.begin(), engine.end()));
    CHECK_THROWS_WITH(rafsd::loadMounts(table), Contains("unknown engine 'fuse'"));
}
