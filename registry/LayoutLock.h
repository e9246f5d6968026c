// One writer of an OCI image layout at a time, across processes. A writer reads, changes and
// renames index.json, and a failed one removes what it wrote (mkrafs convert's CreatedLayout):
// two at once lose one's tag, or one removes blobs the other's manifest names. The lock is an
// flock on the layout's directory (FileLock.h), which those renames leave in place; the kernel
// drops it when its holder dies, so a killed writer leaves no stale lock. A writer waits for
// another as long as that one runs: a conversion may take minutes.
#pragma once

#include "format/UniqueFd.h"

#include <filesystem>
#include <functional>

namespace registry {

class LayoutLock {
public:
    // Locks `dir`, creating it (and its parents) if it is missing. Calls `waiting` once if another
    // writer holds it, then waits for that writer to finish.
    LayoutLock(const std::filesystem::path& dir, const std::function<void()>& waiting);

    // This lock made the directory, and it is still empty: a writer that fails removes it whole.
    bool created() const { return created_; }
    // False where the file system cannot take the lock (NFS): the layout is then not kept from
    // another writer.
    bool locked() const { return locked_; }

private:
    rafs::UniqueFd fd_;  // closing it releases the lock
    bool created_ = false;
    bool locked_ = false;
};

}  // namespace registry
