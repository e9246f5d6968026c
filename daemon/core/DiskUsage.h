// What the files under a directory take on disk (st_blocks, links not followed), what the
// directories below it take, and when the last file was written: the cache collector's measure of
// the cache dir and of what it may remove.
// Files that come and go meanwhile (fetches, mounts, cachefiles) are skipped when they cannot be
// read; a missing directory takes nothing.
#pragma once

#include <cstdint>
#include <filesystem>

namespace rafsd {

struct DiskUsage {
    uint64_t bytes = 0;
    uint64_t directory_bytes = 0;  // the directories below it (not counted in `bytes`)
    int64_t last_write = 0;  // seconds since the epoch; 0 if there is no file

    static DiskUsage of(const std::filesystem::path& dir);
};

// Sets the mtime of `path` (a file or a directory) to now: the collectors take its mtime as its
// last use. A failure is logged: the path then only looks older than it is.
void renewLastUse(const std::filesystem::path& path);

}  // namespace rafsd
