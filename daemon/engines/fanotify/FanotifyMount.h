// What the fanotify engine mounts: a local bootstrap, and one sparse cache file per data blob.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <vector>

namespace rafsd {

// A blob's cache file, created, sized and opened O_RDWR by the core before the engine marks it:
// an fd opened before the mark raises no events, so the core can fill the file through it.
struct FanotifyBlobFile {
    uint32_t blob;
    std::filesystem::path path;
    int fd;
    uint64_t size;
    bool complete;
};

struct FanotifyMount {
    uint32_t image;
    std::filesystem::path bootstrap;  // complete local file, never marked
    std::filesystem::path mountpoint;
    std::vector<FanotifyBlobFile> blobs;  // in blob table order: blobs[i] is EROFS device i + 1
    // Complete files stay marked: every read asks rafsd first, so the cache collector may free
    // their chunks (a bounded cache). Otherwise they are unmarked after the mount, and as they
    // complete, and reads of them cost no event.
    bool keep_marks = false;
    // Otherwise complete files stay marked this long after the mount all the same, so that the
    // image's start trace sees reads of blobs already complete in the cache (AccessTrace; each such
    // read costs an event meanwhile). Zero: unmarked at once.
    std::chrono::seconds traced_complete_for{0};
    // A takeover: the watch on its superblock the previous worker made in the kept inotify
    // instance (SuperblockWatch), or -1.
    int superblock_watch = -1;
};

}  // namespace rafsd
