#include "daemon/api/FscacheMountTable.h"

#include "builder/format/Error.h"
#include "tests/unit/ImageTestUtil.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

using rafsd::FscacheMountRecord;
using Catch::Matchers::Contains;

TEST_CASE("fscache mount table: saved and loaded back, atomically replaced", "[fscache]") {
    rafs::test::TempDir dir;
    const std::filesystem::path table = dir.path() / "state/fscache-mounts.json";
    CHECK(rafsd::loadFscacheMounts(table).empty());  // none yet
    const std::vector<FscacheMountRecord> mounts = {
        {"/images/a/image.boot", "/mnt/a", "rafs-a", "", std::nullopt},
        {"/images/b.blob", "/mnt/b", "fsid-b", "shared", "/images/blobs"},
    };
    rafsd::saveFscacheMounts(table, mounts);  // creates state/
    CHECK(rafsd::loadFscacheMounts(table) == mounts);
    rafsd::saveFscacheMounts(table, {mounts[1]});
    CHECK(rafsd::loadFscacheMounts(table) == std::vector<FscacheMountRecord>{mounts[1]});
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(table.parent_path())) {
        names.push_back(e.path().filename().string());
    }
    CHECK(names == std::vector<std::string>{"fscache-mounts.json"});  // no temporary file left
}

TEST_CASE("fscache mount table: a damaged or foreign file is refused with its name", "[fscache]") {
    rafs::test::TempDir dir;
    const std::string table = dir / "table.json";
    const std::string truncated = R"({"version": 1, "mounts": [{"bootstrap": "/a"})";
    rafs::test::writeFile(table, std::vector<uint8_t>(truncated.begin(), truncated.end()));
    CHECK_THROWS_WITH(rafsd::loadFscacheMounts(table), Contains(table) && Contains("not a table of fscache mounts"));
    const std::string future = R"({"version": 2, "mounts": []})";
    rafs::test::writeFile(table, std::vector<uint8_t>(future.begin(), future.end()));
    CHECK_THROWS_WITH(rafsd::loadFscacheMounts(table), Contains("table version 2"));
}
