// The fscache engine (Linux 5.19 - 7.1): EROFS mounted with fsid= over cachefiles in on-demand
// mode. The kernel keeps one cache file per cookie (the bootstrap, each blob) and asks us, through
// /dev/cachefiles, to open objects (OPEN → copen), fill holes (READ → write through the object's
// anonymous fd, then READ_COMPLETE) and drop them (CLOSE). Blob data reaches the kernel's cache
// file through FscacheCacheFile, the CacheFile the core writes to, whose anonymous fd (ObjectFd)
// the engine attaches and detaches; the engine itself talks to the core through DataPlane only.
//
// Thread-safety: mount, umount and counters may be called from any thread (mount blocks until the
// kernel read the bootstrap, which the loop thread serves); start and stop must not run
// concurrently with anything else of the engine.
#pragma once

#include "daemon/core/DataPlane.h"
#include "daemon/core/LatencySamples.h"
#include "daemon/core/RepeatedFailureLog.h"
#include "daemon/engines/fscache/CookieTable.h"
#include "daemon/engines/fscache/FscacheDevice.h"
#include "daemon/engines/fscache/MessageParser.h"
#include "daemon/engines/fscache/ObjectFd.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

struct io_uring;

namespace rafsd {

struct FscacheBlob {
    uint32_t blob;                  // index in the image's blob table
    std::string cookie;             // the device table tag: the blob id
    uint64_t size;                  // its uncompressed size: the object's size
    std::shared_ptr<ObjectFd> fd;   // what its cache file (FscacheCacheFile) writes through
};

struct FscacheMount {
    uint32_t image;
    std::string fsid;       // cookie of the bootstrap
    std::string domain_id;  // empty: none (volume "erofs,<fsid>")
    std::span<const uint8_t> bootstrap;
    std::filesystem::path mountpoint;
    std::vector<FscacheBlob> blobs;
};

// Tells the kernel that READ `msg_id` is served: CACHEFILES_IOC_READ_COMPLETE on the object's
// anonymous fd. A failure is logged: the reader gets EIO then, and nothing else can be done.
void cachefilesReadComplete(int anon_fd, uint32_t msg_id);

// How the engine completes READs: cachefilesReadComplete, or a stand-in where the anonymous fds are
// not cachefiles' (the ioctl exists only on those), as in the engine's unit tests.
using ReadCompleter = std::function<void(int anon_fd, uint32_t msg_id)>;

struct FscacheCounters {
    uint64_t opens = 0;      // OPEN requests answered with a size
    uint64_t refused = 0;    // OPEN requests for unknown cookies (copen -ENOENT)
    uint64_t reads = 0;      // READ requests
    uint64_t blob_reads = 0;  // of which for blob objects
    uint64_t read_errors = 0;  // READs completed without the data (the reader gets EIO)
    uint64_t stale_chunks = 0;  // chunks marked present that the kernel found holes at
    uint64_t closes = 0;     // CLOSE requests
    // Blob READ → READ_COMPLETE: the time a reader waits for a miss, as rafsd sees it.
    uint64_t read_latency_p50_us = 0;
    uint64_t read_latency_p99_us = 0;
};

class FscacheEngine {
public:
    explicit FscacheEngine(DataPlane& core, ReadCompleter complete = cachefilesReadComplete);
    ~FscacheEngine();  // stop()
    FscacheEngine(const FscacheEngine&) = delete;
    FscacheEngine& operator=(const FscacheEngine&) = delete;

    // Binds cachefiles on `cache_dir` (see FscacheDevice::open) and starts the loop thread.
    void start(const std::filesystem::path& cache_dir, std::string_view tag);

    // Serves `device`, bound by another process (failover: the supervisor, systemd's fd store).
    // Call reattach() for the mounts the kernel already has, then start(true).
    void adopt(FscacheDevice device);
    // Starts the loop thread on the adopted device. `restore`: first ask the kernel to resend
    // every request a dead predecessor left pending (fs/cachefiles/ondemand.c, Linux 6.8+), whose objects it reopens
    // with fresh OPENs. No-op once started.
    void start(bool restore);
    bool started() const { return thread_.joinable(); }

    // Registers the image's cookies, then mounts it; throws (naming refused cookies) on failure.
    void mount(const FscacheMount& mount);

    // Registers the image's cookies without mounting it, so that the kernel's OPENs for it are
    // answered: an image a previous daemon mounted (failover), or one the user mounts by hand with
    // `mount -t erofs -o <mountOptions(...)> none <mountpoint>`.
    void reattach(const FscacheMount& mount);

    // "fsid=<fsid>[,domain_id=<domain_id>]": the EROFS mount options of an image.
    static std::string mountOptions(const std::string& fsid, const std::string& domain_id);

    // Unmounts (throws if busy) and unregisters the image's cookies. An image that is registered
    // but not mounted (never mounted by hand, or unmounted already) is only unregistered.
    void umount(const std::filesystem::path& mountpoint);

    // Unmounts everything (lazily if busy), stops the loop and closes the device. Never throws.
    void stop();

    FscacheCounters counters() const;

    // The bytes of data in the cache file of each object the kernel has open, by (volume key,
    // cookie key), found with SEEK_DATA/SEEK_HOLE through its anonymous fd (which forwards llseek
    // to the file). A file that cannot be asked counts 0. The cache collector needs this because
    // cachefiles keeps a file it creates as an unlinked tmpfile until it lets go of the object
    // (fs/cachefiles/namei.c: cachefiles_create_tmpfile, cachefiles_commit_tmpfile): a mounted
    // image's new data is in no file under the cache dir.
    std::vector<std::pair<CookieTable::Key, uint64_t>> openObjectData() const;

    // Removes cache file `name` of fan-out dir `dir` through cachefiles' `cull` command, which
    // names a file in the caller's working directory (fs/cachefiles/daemon.c): the calling thread
    // gets a working directory of its own for it. Throws rafs::SystemError, EBUSY when the kernel
    // has the file open. Thread-safe, also against stop().
    void cull(const std::filesystem::path& dir, const std::string& name);

private:
    struct Object {
        CookieTable::Key key;
        std::shared_ptr<AnonFd> fd;
        bool bootstrap_written = false;
    };

    void loop(io_uring& ring);
    void drain();
    void handle(std::span<const std::byte> bytes);
    void handleOpen(const CachefilesMessage& msg);
    void handleRead(const CachefilesMessage& msg);
    void handleClose(const CachefilesMessage& msg);
    void registerMount(const FscacheMount& mount);

    DataPlane& core_;
    const ReadCompleter complete_;  // copied into READ completions, which may outlive the engine
    std::optional<FscacheDevice> device_;
    std::mutex device_mutex_;  // device_ against cull() from other threads
    int wake_ = -1;  // eventfd that tells the loop to exit
    std::atomic<bool> quit_{false};
    std::thread thread_;

    mutable std::mutex mutex_;  // everything below
    CookieTable cookies_;
    std::map<uint32_t, Object> objects_;  // by object_id
    // Shared with READ completions, which may outlive the engine after a lazy unmount.
    struct ReadStats {
        std::atomic<uint64_t> errors{0};
        LatencySamples latency;  // blob READ → READ_COMPLETE
        RepeatedFailureLog failures;  // a gone blob fails every READ: not a line each
    };
    std::shared_ptr<ReadStats> read_stats_ = std::make_shared<ReadStats>();
    FscacheCounters counters_;  // but read_errors
};

}  // namespace rafsd
