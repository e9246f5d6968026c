#include "daemon/core/SparseCacheFile.h"
#include "format/ByteView.h"

#include "format/FileIo.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>

namespace rafsd {

namespace {

uint64_t roundUpToBlock(uint64_t value) { return rafs::alignUp(value, CacheFile::kBlockSize); }

// Names for the file systems a cache dir most likely sits on by mistake.
std::string fileSystemName(uint32_t magic) {
    switch (magic) {
    case TMPFS_MAGIC: return "tmpfs";
    case RAMFS_MAGIC: return "ramfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
    case NFS_SUPER_MAGIC: return "nfs";
    case FUSE_SUPER_MAGIC: return "fuse";
    case F2FS_SUPER_MAGIC: return "f2fs";
    default: return fmt::format("a file system with magic {:#x}", magic);
    }
}

// Only these file systems set SB_I_ALLOW_HSM, without which fanotify refuses pre-content marks;
// checking here gives a clear message instead of a later EINVAL from fanotify_mark.
void checkFileSystem(const std::filesystem::path& dir) {
    struct statfs info {};
    if (::statfs(dir.c_str(), &info) != 0) rafs::failErrno(fmt::format("statfs {}", dir.string()));
    const auto magic = static_cast<uint32_t>(info.f_type);
    if (magic == EXT4_SUPER_MAGIC || magic == XFS_SUPER_MAGIC || magic == BTRFS_SUPER_MAGIC) return;
    rafs::fail("cache directory {} is on {}, but fanotify pre-content events need ext4, xfs or btrfs",
               dir.string(), fileSystemName(magic));
}

}  // namespace

std::unique_ptr<SparseCacheFile> SparseCacheFile::open(const std::filesystem::path& path,
                                                       uint64_t size) {
    const uint64_t length = roundUpToBlock(size);
    if (size > length || length > static_cast<uint64_t>(std::numeric_limits<off_t>::max()))
        rafs::fail("{}: cache file size {} is too large", path.string(), size);
    checkFileSystem(path.has_parent_path() ? path.parent_path() : std::filesystem::path("."));

    rafs::UniqueFd opened(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (opened.get() < 0) rafs::failErrno(fmt::format("{}: open", path.string()));
    std::unique_ptr<SparseCacheFile> file(new SparseCacheFile(path, std::move(opened), size));
    const int fd = file->fd();

    struct stat info {};
    if (::fstat(fd, &info) != 0) rafs::failErrno(fmt::format("{}: fstat", path.string()));
    if (!S_ISREG(info.st_mode)) rafs::fail("{}: cache file is not a regular file", path.string());
    if (static_cast<uint64_t>(info.st_size) != length) {
        // A file of another length belongs to another blob or was cut short: none of its content
        // can be trusted, so drop it all and leave holes.
        if (::ftruncate(fd, 0) != 0) rafs::failErrno(fmt::format("{}: ftruncate", path.string()));
        if (::ftruncate(fd, static_cast<off_t>(length)) != 0)
            rafs::failErrno(fmt::format("{}: ftruncate to {}", path.string(), length));
    }
    return file;
}

std::unique_ptr<SparseCacheFile> SparseCacheFile::adopt(const std::filesystem::path& path, rafs::UniqueFd fd,
                                                        uint64_t size) {
    std::unique_ptr<SparseCacheFile> file(new SparseCacheFile(path, std::move(fd), size));
    struct stat info {};
    if (::fstat(file->fd(), &info) != 0) rafs::failErrno(fmt::format("{}: fstat of the kept fd", path.string()));
    if (!S_ISREG(info.st_mode) || static_cast<uint64_t>(info.st_size) != roundUpToBlock(size)) {
        rafs::fail("{}: the kept cache file is not a regular file of {} bytes", path.string(), roundUpToBlock(size));
    }
    return file;
}

SparseCacheFile::SparseCacheFile(std::filesystem::path path, rafs::UniqueFd fd, uint64_t size)
    : path_(std::move(path)), fd_(std::move(fd)), size_(size) {}

bool SparseCacheFile::hasData(uint64_t offset, uint64_t length) const {
    if (length == 0) return true;
    const uint64_t file_end = roundUpToBlock(size_);
    if (offset >= file_end) return false;
    const uint64_t end = offset + std::min(length, file_end - offset);
    // The end of file counts as a hole, so the range is all data iff the first hole at or after
    // `offset` lies at or past its end.
    const off_t hole = ::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_HOLE);
    if (hole < 0) rafs::failErrno(fmt::format("{}: lseek SEEK_HOLE at {}", path_.string(), offset));
    return static_cast<uint64_t>(hole) >= end;
}

void SparseCacheFile::discard(uint64_t offset, uint64_t length) {
    if (offset % kBlockSize != 0 || length % kBlockSize != 0)
        rafs::fail("{}: cannot free {} bytes at offset {}: not {}-byte aligned", path_.string(), length, offset, kBlockSize);
    if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(length)) != 0) {
        rafs::failErrno(fmt::format("{}: punching a hole of {} bytes at offset {}", path_.string(), length, offset));
    }
}

void SparseCacheFile::sync() {
    if (::fdatasync(fd_.get()) != 0) rafs::failErrno(fmt::format("{}: fdatasync", path_.string()));
}

// A plain pwrite, not io_uring: ext4 takes no non-blocking buffered writes (its files lack
// FMODE_BUF_WASYNC, fs/ext4/file.c), so io_uring hands every such write to an io-wq worker
// (io_uring/rw.c, io_write) and the copy into the page cache costs two thread switches more.
// Measured in docs/benchmarks.md ("Reads through rafsd"): about 1 ms per write through the ring
// against 0.1 ms inline.
void SparseCacheFile::writeBlocks(uint64_t offset, std::span<const uint8_t> data) {
    rafs::pwriteAll(fd_.get(), data, offset, path_.native());
}

}  // namespace rafsd
