// The fanotify engine's cache file: a sparse file that rafsd owns, on ext4, xfs or btrfs (the only
// file systems that accept fanotify pre-content marks), sized to the blob's uncompressed size
// rounded up to 4 KiB. Unfilled ranges are holes.
//
// The fd is opened by open(), which the engine must call BEFORE it adds the FAN_PRE_ACCESS mark:
// the kernel decides at open time whether a file raises pre-content events, so writes through
// this fd never raise events (and never wait for rafsd itself), while EROFS, which opens the
// file after the mark, does.
#pragma once

#include "daemon/core/CacheFile.h"
#include "format/UniqueFd.h"

#include <filesystem>
#include <memory>

namespace rafsd {

class SparseCacheFile final : public CacheFile {
public:
    // Creates the file, or reuses it (keeping its content) if it already has the right length;
    // a file of another length is emptied and resized. Throws Error if the directory is not on
    // ext4, xfs or btrfs, or on any system call failure.
    static std::unique_ptr<SparseCacheFile> open(const std::filesystem::path& path, uint64_t size);

    // The cache file a previous worker opened (before its mark) and a supervisor kept, at `path`.
    // Throws Error if it is not a regular file of the blob's length.
    static std::unique_ptr<SparseCacheFile> adopt(const std::filesystem::path& path, rafs::UniqueFd fd, uint64_t size);

    int fd() const { return fd_.get(); }
    const std::filesystem::path& path() const { return path_; }

    std::string name() const override { return path_.string(); }
    uint64_t size() const override { return size_; }
    bool hasData(uint64_t offset, uint64_t length) const override;
    bool canDiscard() const override { return true; }
    void discard(uint64_t offset, uint64_t length) override;  // FALLOC_FL_PUNCH_HOLE
    void sync() override;  // fdatasync

private:
    SparseCacheFile(std::filesystem::path path, rafs::UniqueFd fd, uint64_t size);

    // pwrite, in the calling thread.
    void writeBlocks(uint64_t offset, std::span<const uint8_t> data) override;

    std::filesystem::path path_;
    rafs::UniqueFd fd_;  // a failed close loses nothing: sync() is where durability is checked
    uint64_t size_;
};

}  // namespace rafsd
