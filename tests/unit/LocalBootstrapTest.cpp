#include "daemon/api/LocalBootstrap.h"

#include "daemon/engines/fanotify/ErofsFileMount.h"
#include "format/Bootstrap.h"
#include "tests/unit/ImageTestUtil.h"
#include "tests/unit/OneFileImage.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>
#include <sys/mount.h>
#include <unistd.h>

using rafs::test::TempDir;

namespace {

std::vector<std::string> names(const std::vector<rafsd::UnusedCache>& caches) {
    std::vector<std::string> out;
    for (const auto& c : caches) out.push_back(c.name);
    return out;
}

}  // namespace

TEST_CASE("extracted bootstraps: renewed on reuse, collected unless recent or mounted", "[cache]") {
    TempDir dir;
    rafs::test::buildOneFileImage(dir.path(), "file", std::vector<uint8_t>(10000, 'f'));
    const rafs::Bootstrap bootstrap(dir / "img/image.boot");
    const std::vector<uint8_t> bytes(bootstrap.bytes().begin(), bootstrap.bytes().end());
    const std::filesystem::path cache = dir.path() / "cache";
    std::filesystem::create_directories(cache);
    const std::filesystem::path path = rafsd::extractBootstrap(bootstrap, cache);
    CHECK(rafs::test::readFile(path.string()) == bytes);
    const std::string name = "extracted bootstrap " + path.filename().string();

    rafsd::ExtractedBootstraps layout(cache, std::chrono::seconds(60));
    CHECK(layout.list({}).empty());  // just written
    const auto old = std::filesystem::file_time_type::clock::now() - std::chrono::hours(2);
    std::filesystem::last_write_time(path, old);
    CHECK(names(layout.list({})) == std::vector<std::string>{name});
    CHECK(rafsd::extractBootstrap(bootstrap, cache) == path);  // reused: recent again
    CHECK(layout.list({}).empty());
    std::filesystem::last_write_time(path, old);

    if (::geteuid() == 0) {
        // Mounted (file-backed EROFS, the blob as its device): in use, whatever its age.
        const std::filesystem::path mnt = dir.path() / "mnt";
        std::filesystem::create_directories(mnt);
        const std::string blob_id = bootstrap.blobs().at(0).id;
        rafsd::mountErofsFiles(path, {dir.path() / "img/blobs" / blob_id}, mnt, [](int) {});
        const std::vector<rafsd::UnusedCache> while_mounted = layout.list({});
        REQUIRE(::umount2(mnt.c_str(), 0) == 0);
        CHECK(while_mounted.empty());
    } else {
        WARN("not root: the mounted case is skipped");
    }

    std::vector<rafsd::UnusedCache> unused = layout.list({});
    REQUIRE(unused.size() == 1);
    CHECK(unused[0].bytes > 0);
    unused[0].remove();
    CHECK_FALSE(std::filesystem::exists(path));
    CHECK(layout.list({}).empty());
    CHECK(rafs::test::readFile(rafsd::extractBootstrap(bootstrap, cache).string()) == bytes);
}
