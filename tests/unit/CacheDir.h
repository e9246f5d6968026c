// A test's cache directory on a file system sparse cache files may live on (ext4, xfs, btrfs):
// the system's temp directory unless that is something else (tmpfs), else /var/tmp.
#pragma once

#include "tests/unit/TempDir.h"

#include <linux/magic.h>
#include <sys/statfs.h>

#include <cstdint>
#include <filesystem>

namespace rafs::test {

class CacheDir : public TempDir {
public:
    CacheDir() : TempDir(cacheParent()) {}

    static bool onHsmFileSystem(const std::filesystem::path& dir) {
        struct statfs info {};
        if (::statfs(dir.c_str(), &info) != 0) return false;
        const auto magic = static_cast<uint32_t>(info.f_type);
        return magic == EXT4_SUPER_MAGIC || magic == XFS_SUPER_MAGIC || magic == BTRFS_SUPER_MAGIC;
    }

private:
    static std::filesystem::path cacheParent() {
        const std::filesystem::path tmp = std::filesystem::temp_directory_path();
        return onHsmFileSystem(tmp) ? tmp : std::filesystem::path("/var/tmp");
    }
};

}  // namespace rafs::test
