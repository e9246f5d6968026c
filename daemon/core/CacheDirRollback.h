// Leaves a cache dir as a failed mount found it. The constructor creates the dir (and its missing
// parents) if needed; unless commit() is called, the destructor removes what appeared since: the
// dirs it created, or else the new entries at the top of the dir (a blob's .blob.meta, .blob.data
// and .chunkmap, an extracted bootstrap, fscache-state/). Mounts are one at a time (ImageService),
// and a blob file already there is never removed, so another image's files stay whole.
#pragma once

#include <filesystem>
#include <set>
#include <string>

namespace rafsd {

class CacheDirRollback {
public:
    // Throws rafs::Error naming the dir if it cannot be created or listed.
    explicit CacheDirRollback(std::filesystem::path dir);
    ~CacheDirRollback();  // best effort: a failed removal must not hide the mount's own error
    CacheDirRollback(const CacheDirRollback&) = delete;
    CacheDirRollback& operator=(const CacheDirRollback&) = delete;

    // The mount succeeded: keep everything.
    void commit() { committed_ = true; }

private:
    std::filesystem::path dir_;
    std::filesystem::path created_;  // the topmost dir the constructor made; empty if none
    std::set<std::string> before_;   // the entries dir_ had
    bool committed_ = false;
};

}  // namespace rafsd
