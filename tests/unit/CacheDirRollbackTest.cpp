#include "daemon/core/CacheDirRollback.h"

#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

using rafsd::CacheDirRollback;
namespace fs = std::filesystem;

namespace {

void touch(const fs::path& path) { std::ofstream(path) << "x"; }

}  // namespace

TEST_CASE("a failed mount removes the cache dir and the parents it created", "[cache]") {
    rafs::test::TempDir tmp;
    const fs::path dir = tmp.path() / "new" / "cache";
    {
        CacheDirRollback rollback(dir);
        REQUIRE(fs::is_directory(dir));
        touch(dir / "blob.meta");
    }
    CHECK_FALSE(fs::exists(tmp.path() / "new"));
}

TEST_CASE("a failed mount removes only what it added to an existing cache dir", "[cache]") {
    rafs::test::TempDir tmp;
    touch(tmp.path() / "old.chunkmap");
    {
        CacheDirRollback rollback(tmp.path());
        touch(tmp.path() / "new.blob.meta");
        fs::create_directory(tmp.path() / "fscache-state");
        touch(tmp.path() / "fscache-state" / "new.chunkmap");
    }
    CHECK(fs::exists(tmp.path() / "old.chunkmap"));
    CHECK_FALSE(fs::exists(tmp.path() / "new.blob.meta"));
    CHECK_FALSE(fs::exists(tmp.path() / "fscache-state"));
}

TEST_CASE("a failed fscache mount removes what it added to an existing volume's state", "[cache]") {
    rafs::test::TempDir tmp;
    const fs::path state = tmp.path() / "fscache-state";
    fs::create_directories(state / "vol1");
    touch(state / "vol1" / "kept.chunkmap");
    {
        CacheDirRollback rollback(tmp.path(), {"fscache-state", "fscache-state/vol1"});
        touch(state / "vol1" / "new.chunkmap");
        fs::create_directory(state / "vol2");
        touch(state / "vol2" / "other.chunkmap");
    }
    CHECK(fs::exists(state / "vol1" / "kept.chunkmap"));
    CHECK_FALSE(fs::exists(state / "vol1" / "new.chunkmap"));
    CHECK_FALSE(fs::exists(state / "vol2"));
}

TEST_CASE("a committed mount keeps what it created", "[cache]") {
    rafs::test::TempDir tmp;
    const fs::path dir = tmp.path() / "cache";
    {
        CacheDirRollback rollback(dir);
        touch(dir / "blob.data");
        rollback.commit();
    }
    CHECK(fs::exists(dir / "blob.data"));
}

TEST_CASE("a cache dir that cannot be created is an error naming it", "[cache]") {
    rafs::test::TempDir tmp;
    touch(tmp.path() / "file");
    CHECK_THROWS_WITH(CacheDirRollback(tmp.path() / "file" / "cache"),
                      Catch::Matchers::Contains((tmp.path() / "file" / "cache").string()));
}
