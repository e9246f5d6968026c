// The fscache engine (Linux 5.19 - 7.1): EROFS mounted with fsid= over cachefiles in on-demand
// mode. The kernel keeps one cache file per cookie (the bootstrap, each blob) and asks us, through
// /dev/cachefiles, to open objects (OPEN → copen), fill holes (READ → write through the object's
// anonymous fd, then READ_COMPLETE) and drop them (CLOSE). Blob data reaches the kernel's cache
// file through FscacheCacheFile, the CacheFile the core writes to.
//
// Thread-safety: mount, umount and counters may be called from any thread (mount blocks until the
// kernel read the bootstrap, which the loop thread serves); start and stop must not run
// concurrently with anything else of the engine.
#pragma once

#include "daemon/core/CacheFile.h"
#include "daemon/core/CachedBlob.h"
#include "daemon/core/DataPlane.h"
#include "daemon/engines/fscache/FscacheDevice.h"
#include "daemon/engines/fscache/MessageParser.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace rafsd {

// An anonymous fd from an OPEN; closed when the last holder (object table, cache file, pending
// READ completion) lets go, so a completion never ioctls a reused fd number.
class AnonFd {
public:
    explicit AnonFd(int fd) : fd_(fd) {}
    ~AnonFd();
    AnonFd(const AnonFd&) = delete;
    AnonFd& operator=(const AnonFd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

// A blob's cache file as the kernel's cachefiles object: written through the object's anonymous fd
// (direct I/O in the kernel), attached on OPEN and detached on CLOSE. Writes while detached throw.
class FscacheCacheFile final : public CacheFile {
public:
    FscacheCacheFile(std::string name, uint64_t size) : name_(std::move(name)), size_(size) {}

    std::string name() const override { return name_; }
    uint64_t size() const override { return size_; }
    // SEEK_DATA/SEEK_HOLE through the anonymous fd (it forwards llseek to the cache file); true
    // while detached, since nothing can be known then.
    bool hasData(uint64_t offset, uint64_t length) const override;
    // The kernel owns the file; its data is as durable as cachefiles makes it.
    void sync() override {}

    void attach(std::shared_ptr<AnonFd> fd);
    void detach(const AnonFd& fd);  // only if `fd` is the attached one (an older OPEN's CLOSE)

private:
    void writeBlocks(uint64_t offset, std::span<const uint8_t> data) override;

    std::string name_;
    uint64_t size_;
    mutable std::shared_mutex mutex_;  // fd_: writers share, attach/detach exclude
    std::shared_ptr<AnonFd> fd_;
};

struct FscacheBlob {
    uint32_t blob;                      // index in the image's blob table
    std::string cookie;                 // the device table tag: the blob id
    std::shared_ptr<CachedBlob> cached;  // its cache() file is an FscacheCacheFile
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
    // every request a dead predecessor left pending (kernel-abi.md A.4), whose objects it reopens
    // with fresh OPENs. No-op once started.
    void start(bool restore);
    bool started() const { return thread_.joinable(); }

    // Registers the image's cookies, then mounts it; throws (naming refused cookies) on failure.
    void mount(const FscacheMount& mount);

    // Registers the image's cookies without mounting it, so that the kernel's OPENs for it are
    // answered: an image a previous daemon mounted (failover), or one the user mounts by hand with
    // `mount -t erofs -o <mountOptions(...)> none <mountpoint>`.
    void reattach(const FscacheMount& mount);

    // fsid and domain_id become EROFS mount options and cachefiles key (file) names, so they keep
    // to characters that mean nothing there: kNameRule.
    static bool validName(std::string_view name);
    static constexpr const char* kNameRule = "1 to 128 letters, digits, '.', '_', ':' or '-'";

    // "fsid=<fsid>[,domain_id=<domain_id>]": the EROFS mount options of an image.
    static std::string mountOptions(const std::string& fsid, const std::string& domain_id);

    // Unmounts (throws if busy) and unregisters the image's cookies. An image that is registered
    // but not mounted (never mounted by hand, or unmounted already) is only unregistered.
    void umount(const std::filesystem::path& mountpoint);

    // Unmounts everything (lazily if busy), stops the loop and closes the device. Never throws.
    void stop();

    FscacheCounters counters() const;

private:
    using CookieKey = std::pair<std::string, std::string>;  // volume key, cookie key

    struct Cookie {
        std::shared_ptr<uint8_t> bootstrap;  // 4 KiB-aligned copy, zero-padded to 4 KiB
        uint64_t bootstrap_size = 0;         // the file's size (copen), not padded
        std::shared_ptr<CachedBlob> blob;
        std::vector<std::pair<uint32_t, uint32_t>> users;  // (image, blob)
    };

    struct Object {
        CookieKey key;
        std::shared_ptr<AnonFd> fd;
        bool bootstrap_written = false;
    };

    struct MountEntry {
        uint32_t image;
        std::filesystem::path mountpoint;
        std::vector<CookieKey> cookies;
    };

    void loop();
    void drain();
    void handle(std::span<const std::byte> bytes);
    void handleOpen(const CachefilesMessage& msg);
    void handleRead(const CachefilesMessage& msg);
    void handleClose(const CachefilesMessage& msg);
    void unregister(const MountEntry& entry);
    void registerMount(const FscacheMount& mount);

    DataPlane& core_;
    const ReadCompleter complete_;  // copied into READ completions, which may outlive the engine
    std::optional<FscacheDevice> device_;
    int wake_ = -1;  // eventfd that tells the loop to exit
    std::atomic<bool> quit_{false};
    std::thread thread_;

    mutable std::mutex mutex_;  // everything below
    std::map<CookieKey, Cookie> cookies_;
    std::map<uint32_t, Object> objects_;  // by object_id
    std::vector<MountEntry> mounts_;
    std::vector<std::string> refused_;  // cookies refused since the last mount started
    // Shared with READ completions, which may outlive the engine after a lazy unmount.
    struct ReadStats {
        std::atomic<uint64_t> errors{0};
        std::mutex mutex;
        std::vector<uint32_t> latencies_us;  // blob READ → READ_COMPLETE, at most kMaxLatencySamples
    };
    static constexpr size_t kMaxLatencySamples = 1 << 20;
    std::shared_ptr<ReadStats> read_stats_ = std::make_shared<ReadStats>();
    FscacheCounters counters_;  // but read_errors
};

}  // namespace rafsd
