// Leaves a cache dir as a failed mount found it. The constructor creates the dir (and its missing
// parents) if needed; unless commit() is called, the destructor removes what appeared since: the
// dirs it created, or else the new entries at the top of the dir (a blob's .blob.meta, .blob.data
// and .chunkmap, an extracted bootstrap, fscache-state/) and in the `nested` dirs below it (an
// fscache volume's fscache-state/<volume>/ and its chunk maps). Mounts are one at a time
// (ImageService), and a blob file already there is never removed, so another image's files stay
// whole.
#pragma once

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace rafsd {

class CacheDirRollback {
public:
    // Throws rafs::Error naming the dir if it cannot be created or listed.
    explicit CacheDirRollback(std::filesystem::path dir, std::vector<std::filesystem::path> nested = {});
    ~CacheDirRollback();  // best effort: a failed removal must not hide the mount's own error
    CacheDirRollback(const CacheDirRollback&) = delete;
    CacheDirRollback& operator=(const CacheDirRollback&) = delete;

    // The mount succeeded: keep everything.
    void commit() { committed_ = true; }

private:
    std::filesystem::path dir_;
    std::filesystem::path created_;  // the topmost dir the constructor made; empty if none
    // The entries dir_ and each nested dir (relative to dir_) had; a nested dir absent then is new
    // itself, an entry of the dir above it.
    std::map<std::filesystem::path, std::set<std::string>> before_;
    bool committed_ = false;
};

}  // namespace rafsd
