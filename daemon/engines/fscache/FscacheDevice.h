// /dev/cachefiles in on-demand mode (fs/cachefiles/daemon.c, fs/cachefiles/ondemand.c): opening and binding the cache, and
// the text commands written to the device at run time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace rafsd {

class FscacheDevice {
public:
    static constexpr const char* kPath = "/dev/cachefiles";

    // Opens the device and binds `cache_dir` (created if needed) in on-demand mode under `tag`.
    // Throws Error saying what is missing: the device, the on-demand mode, a suitable cache file
    // system, or the device being held by another daemon.
    static FscacheDevice open(const std::filesystem::path& cache_dir, std::string_view tag);

    // Takes ownership of `fd`, a device already bound by another process (failover).
    static FscacheDevice adopt(int fd) { return FscacheDevice(fd); }

    ~FscacheDevice();
    FscacheDevice(FscacheDevice&& other) noexcept;
    FscacheDevice& operator=(FscacheDevice&&) = delete;

    int fd() const { return fd_; }

    // Answers OPEN request `msg_id`: the object's size, or a negative errno to fail it.
    void copen(uint32_t msg_id, int64_t size_or_error);

    // Failover: makes the kernel resend every pending request. Throws Error, saying so when the
    // kernel lacks the command.
    void restore();

    // Whether this kernel's cachefiles has `restore`, which failover and a reload need: empty if
    // it has, else why not. Linux 6.8 brought it, and stable kernels before it have it backported
    // (Debian 12's 6.1 does). Writing it is no probe: the kernel would resend every request the
    // serving daemon is answering. So before 6.8 the kernel's symbol table is asked
    // (fs/cachefiles/ondemand.c, cachefiles_ondemand_restore); when it lists no cachefiles
    // function at all (no CONFIG_KALLSYMS, or the module not loaded yet), the answer is no.
    static std::string lacksRestore();

    // Throws Error("<command>: <errno text>") when the kernel refuses it.
    void command(std::string_view text);

private:
    explicit FscacheDevice(int fd) : fd_(fd) {}
    int fd_ = -1;
};

// Throws Error unless `dir` is on a file system cachefiles can keep its cache on.
void checkCacheFilesystem(const std::filesystem::path& dir);

}  // namespace rafsd
