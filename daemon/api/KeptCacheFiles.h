// The fanotify engine's sparse cache files whose fds the supervisor and systemd's fd store keep
// (KeptFds), found by blob id. A worker that takes the mounts over must write through the very fd
// its predecessor opened before the file was marked: a file opened after its mark raises events
// for our own writes.
//
// Kept under short names made of the file's identity, "c<inode>-<device>" in hex: systemd passes
// every stored name to a restarted service in one variable, LISTEN_FDNAMES, which execve(2)
// refuses above 128 KiB, and past that a restart after a crash fails and releases the mounts'
// kernel objects. 9,000 to 11,000 names of this form fit, against 1,870 of "blob-<64 hex digits>",
// the form rafsd used before, which is still read. Which blob a kept file holds is read back from
// the path its fd was opened with ("<blob id>.blob.data", BlobCacheFiles.h).
#pragma once

#include "daemon/process/KeptFds.h"

#include <map>
#include <string>
#include <vector>

namespace rafsd {

class KeptCacheFiles {
public:
    // Indexes the cache files `kept` holds. A kept file whose blob cannot be told is logged and
    // left kept: it may be all that keeps a mount's file.
    explicit KeptCacheFiles(KeptFds& kept);

    // The fd kept for blob `blob_id`'s cache file, or -1. Owned by the KeptFds.
    int find(const std::string& blob_id) const;
    // Keeps `fd`, open on blob `blob_id`'s cache file (replacing another file kept for that blob;
    // nothing if that file is kept already, under whichever name). Throws rafs::Error when it
    // cannot be kept.
    void keep(const std::string& blob_id, int fd);
    // Drops the fd kept for `blob_id`, if any.
    void drop(const std::string& blob_id);
    // The blobs whose cache files are kept.
    std::vector<std::string> blobIds() const;

    // The name a cache file open as `fd` is kept under. Throws rafs::Error if it cannot be stat'ed.
    static std::string nameOf(int fd);

private:
    KeptFds& kept_;
    std::map<std::string, std::string> names_;  // blob id -> kept name
};

}  // namespace rafsd
