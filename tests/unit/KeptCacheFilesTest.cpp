#include "daemon/api/KeptCacheFiles.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

using rafsd::KeptCacheFiles;
using rafsd::KeptFds;

namespace {

const std::string kBlobA(64, 'a');
const std::string kBlobB(64, 'b');

rafs::UniqueFd openCacheFile(const std::filesystem::path& path) {
    rafs::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    REQUIRE(fd.get() >= 0);
    return fd;
}

}  // namespace

TEST_CASE("kept cache files: kept under short identity names, found by blob id, also by the next worker",
          "[process]") {
    rafs::test::TempDir dir;
    const rafs::UniqueFd a = openCacheFile(dir.path() / (kBlobA + ".blob.data"));
    const rafs::UniqueFd b = openCacheFile(dir.path() / (kBlobB + ".blob.data"));
    KeptFds kept;
    KeptCacheFiles files(kept);
    files.keep(kBlobA, a.get());
    files.keep(kBlobB, b.get());
    const std::string name = KeptCacheFiles::nameOf(a.get());
    CHECK(name.size() < 24);
    CHECK(name.starts_with("c"));
    CHECK(kept.find(name) >= 0);
    CHECK(files.find(kBlobA) == kept.find(name));
    CHECK(files.find(std::string(64, 'c')) == -1);

    // The next worker knows only the kept set: which blob each fd holds comes from its path, also
    // once that file is removed.
    REQUIRE(::unlink((dir.path() / (kBlobB + ".blob.data")).c_str()) == 0);
    KeptCacheFiles next(kept);
    CHECK(next.blobIds() == std::vector<std::string>{kBlobA, kBlobB});
    CHECK(next.find(kBlobB) == kept.find(KeptCacheFiles::nameOf(b.get())));

    next.drop(kBlobA);
    CHECK(next.find(kBlobA) == -1);
    CHECK(kept.find(name) == -1);
    CHECK(next.blobIds() == std::vector<std::string>{kBlobB});
}

TEST_CASE("kept cache files: the names an earlier rafsd kept them under are still read", "[process]") {
    rafs::test::TempDir dir;
    const rafs::UniqueFd a = openCacheFile(dir.path() / (kBlobA + ".blob.data"));
    const rafs::UniqueFd moved = openCacheFile(dir.path() / "renamed");
    const rafs::UniqueFd other = openCacheFile(dir.path() / "not-a-cache-file");
    KeptFds kept;
    kept.keep("fanotify", other.get());
    kept.keep("blob-" + kBlobA, a.get());
    kept.keep("blob-" + kBlobB, moved.get());  // its path names no blob: the old name does
    kept.keep("c12-34", other.get());            // an identity name whose path names no blob
    KeptCacheFiles files(kept);
    CHECK(files.blobIds() == std::vector<std::string>{kBlobA, kBlobB});
    CHECK(files.find(kBlobA) == kept.find("blob-" + kBlobA));
    CHECK(files.find(kBlobB) == kept.find("blob-" + kBlobB));

    // The same file is not kept again under a second name (systemd's fd store would ignore it);
    // another file for the blob replaces the old one.
    files.keep(kBlobA, a.get());
    CHECK(kept.find("blob-" + kBlobA) >= 0);
    CHECK(kept.find(KeptCacheFiles::nameOf(a.get())) == -1);
    const rafs::UniqueFd newer = openCacheFile(dir.path() / (kBlobB + ".blob.data"));
    files.keep(kBlobB, newer.get());
    CHECK(kept.find("blob-" + kBlobB) == -1);
    CHECK(files.find(kBlobB) == kept.find(KeptCacheFiles::nameOf(newer.get())));
    // Two names of one file (from an older and a newer rafsd): the second is dropped.
    kept.keep(KeptCacheFiles::nameOf(a.get()), a.get());
    KeptCacheFiles again(kept);
    CHECK(kept.names().size() == 4);  // fanotify, c12-34, one name for each blob
    // Left alone: not a cache file, or one whose blob cannot be told.
    CHECK(kept.find("fanotify") >= 0);
    CHECK(kept.find("c12-34") >= 0);
}
