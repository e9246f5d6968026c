// The fanotify engine's table of mounts and of the cache files its group watches: which mount uses
// which file, which files are marked for FAN_PRE_ACCESS, and our own fd on each (the identity of
// the file, and the target of mark changes). Files stay in the table until no mount uses them,
// complete ones too, so an event for a file not in it is one nobody serves.
//
// Thread-safe.
#pragma once

#include "daemon/engines/fanotify/FanotifyMount.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace rafsd {

class MarkedFiles {
public:
    using FileKey = std::pair<uint64_t, uint64_t>;  // st_dev, st_ino of a cache file

    // The identity of the regular file `fd` is open on; `name` says which, in errors (Error).
    static FileKey keyOf(int fd, const std::string& name);

    // Who serves a file: any of its users will do, since they share the cache file.
    struct Served {
        uint32_t image;
        uint32_t blob;
        uint64_t size;
    };

    explicit MarkedFiles(int group) : group_(group) {}
    ~MarkedFiles();
    MarkedFiles(const MarkedFiles&) = delete;
    MarkedFiles& operator=(const MarkedFiles&) = delete;

    // Registers a mount and marks its files (complete ones too: the engine unmarks them once the
    // mount has opened them); call before the mount opens them, since the
    // open decides whether a file is watched. `reattach`: a mount a dead worker made on this group,
    // whose marks stay (adding one again changes nothing) and whose complete files are unmarked
    // (unless the mount keeps its marks). Returns whether it deferred an unmark (unmarkComplete).
    // Throws rafs::Error (nothing registered) if the mountpoint is taken or a mark fails.
    bool add(const FanotifyMount& mount, bool reattach);
    // Forgets a mount; a file no mount uses any more loses its mark and our fd. Throws rafs::Error
    // if `mountpoint` is not in the table.
    void remove(const std::filesystem::path& mountpoint);
    // The mount at `from` is known as `to` from now on. Throws rafs::Error if `from` is not in the
    // table or `to` is.
    void rename(const std::filesystem::path& from, const std::filesystem::path& to);
    bool has(const std::filesystem::path& mountpoint) const;
    std::vector<std::filesystem::path> mountpoints() const;

    std::optional<Served> find(FileKey key) const;
    // Every file served, for an event whose file is not known.
    std::vector<std::pair<FileKey, Served>> all() const;
    // A file of a mount: its path (for messages), and who serves it for that mount.
    struct MountFile {
        std::filesystem::path path;
        Served served;
    };
    std::vector<MountFile> filesOf(const std::filesystem::path& mountpoint) const;

    // The cache file `fd` is open on is complete: drop its mark, for every image using it; nothing
    // if no mount uses it. While a mount keeps complete files marked for its start trace
    // (FanotifyMount::traced_complete_for), the mark is dropped by unmarkDeferred once that is
    // over; returns whether it deferred the unmark now, so that the caller has the event loop
    // wait for it. Throws rafs::Error if it cannot be stat'ed or unmarked.
    bool unmarkComplete(int fd);
    // Drops the marks unmarkComplete deferred whose time has come (a failure is logged: the file
    // keeps raising events, answered from the cache); returns when the next one is due.
    std::optional<std::chrono::steady_clock::time_point> unmarkDeferred();

private:
    struct File {
        std::filesystem::path path;
        int fd;
        uint64_t size;
        bool marked;
        std::vector<std::pair<uint32_t, uint32_t>> users;  // (image, blob) per mount using it
        std::chrono::steady_clock::time_point marked_until{};  // for start traces; see unmarkComplete
        bool unmark_deferred = false;                          // complete: unmarked at marked_until
    };

    struct Mount {
        uint32_t image;
        std::filesystem::path mountpoint;
        std::vector<std::pair<uint32_t, FileKey>> files;  // blob, file
    };

    void acquire(const FanotifyBlobFile& blob, uint32_t image, std::vector<std::pair<uint32_t, FileKey>>& files);
    void release(uint32_t image, const std::vector<std::pair<uint32_t, FileKey>>& files);
    void unmark(File& file);                      // mutex_ held; throws
    bool unmarkOrDefer(File& file);               // mutex_ held; throws; true: newly deferred

    const int group_;
    // Files whose unmark waits (File::unmark_deferred): unmarkDeferred, which the event loop calls
    // before every wait, looks no further while there are none.
    std::atomic<size_t> deferred_{0};
    mutable std::mutex mutex_;
    std::map<FileKey, File> files_;
    std::vector<Mount> mounts_;
};

}  // namespace rafsd
