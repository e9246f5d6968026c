#include "builder/source/DirectorySource.h"
#include "format/FileIo.h"

#include "format/Error.h"
#include "format/UniqueFd.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <utility>
#include <vector>

namespace rafs::build {

namespace {

// A regular file's content, read through an fd. Opened at the first read, so a file that
// vanishes or is replaced between the walk and the read is reported as such.
class FdFileData final : public FileData {
public:
    FdFileData(std::string path, const struct stat& listed)
        : path_(std::move(path)), listed_(listed), size_(static_cast<uint64_t>(listed.st_size)) {}

    void read(std::span<uint8_t> out) override {
        if (out.size() > size_ - pos_) fail("{}: read past the end of the file", path_);
        if (fd_.get() < 0) open();
        while (!out.empty()) {
            if (pos_ == extent_end_) findExtent();
            const auto n = static_cast<size_t>(std::min<uint64_t>(out.size(), extent_end_ - pos_));
            if (extent_is_data_) {
                readFully(out.first(n));
            } else {
                std::memset(out.data(), 0, n);
            }
            out = out.subspan(n);
            pos_ += n;
        }
        if (pos_ == size_) checkSize();
    }

    std::string name() const override { return path_; }

    bool skipHole(uint64_t length) override {
        if (length == 0 || length > size_ - pos_) return false;
        if (fd_.get() < 0) open();
        if (pos_ == extent_end_) findExtent();
        if (extent_is_data_ || extent_end_ - pos_ < length) return false;
        pos_ += length;
        if (pos_ == size_) checkSize();
        return true;
    }

private:
    void open() {
        fd_ = UniqueFd(::open(path_.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
        if (fd_.get() < 0) failErrno(fmt::format("cannot open {}", path_));
        struct stat st {};
        if (::fstat(fd_.get(), &st) != 0) failErrno(fmt::format("cannot stat {}", path_));
        if (!S_ISREG(st.st_mode) || st.st_dev != listed_.st_dev || st.st_ino != listed_.st_ino) {
            fail("{}: replaced by another file while reading", path_);
        }
    }

    // Sets extent_end_ and extent_is_data_ for the data or hole extent starting at pos_, so
    // holes of sparse files are produced as zeros without reading them.
    void findExtent() {
        const auto pos = static_cast<off_t>(pos_);
        const off_t data = ::lseek(fd_.get(), pos, SEEK_DATA);
        off_t end = 0;
        if (data < 0 && errno == ENXIO) {
            // Only a hole past pos_ (or the file shrank, which checkSize reports).
            extent_is_data_ = false;
            end = static_cast<off_t>(size_);
        } else if (data < 0 && errno == EINVAL) {
            // A file system without SEEK_DATA: all of it is data.
            extent_is_data_ = true;
            end = static_cast<off_t>(size_);
        } else if (data < 0) {
            failErrno(fmt::format("cannot seek in {}", path_));
        } else if (data > pos) {
            extent_is_data_ = false;
            end = data;
        } else {
            end = ::lseek(fd_.get(), pos, SEEK_HOLE);
            if (end < 0 && errno == ENXIO) fail("{}: file shrank while reading", path_);
            if (end < 0) failErrno(fmt::format("cannot seek in {}", path_));
            extent_is_data_ = true;
        }
        extent_end_ = std::min(static_cast<uint64_t>(end), size_);
    }

    void readFully(std::span<uint8_t> out) {
        preadExactly(fd_.get(), out, pos_, path_);
    }

    void checkSize() {
        struct stat st {};
        if (::fstat(fd_.get(), &st) != 0) failErrno(fmt::format("cannot stat {}", path_));
        const auto now = static_cast<uint64_t>(st.st_size);
        if (now < size_) fail("{}: file shrank while reading", path_);
        if (now > size_) fail("{}: file grew while reading", path_);
    }

    std::string path_;
    struct stat listed_;
    uint64_t size_;
    UniqueFd fd_;
    uint64_t pos_ = 0;
    uint64_t extent_end_ = 0;
    bool extent_is_data_ = false;
};

std::string readSymlink(const std::string& path, const struct stat& st) {
    // st_size is the target length, but the link may change: grow the buffer until it fits.
    std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
    for (;;) {
        const ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
        if (n < 0) failErrno(fmt::format("cannot read symlink {}", path));
        if (static_cast<size_t>(n) < target.size()) {
            target.resize(static_cast<size_t>(n));
            return target;
        }
        target.resize(target.size() * 2);
    }
}

// Calls fetch(buffer, size) until the buffer is big enough for the answer; fetch returns what
// the l*xattr calls return. ERANGE means the value grew between the size query and the read.
template <typename Fetch>
bool fetchXattrBuffer(std::string& buf, Fetch fetch) {
    for (;;) {
        ssize_t n = fetch(nullptr, 0);
        if (n < 0) return false;
        buf.resize(static_cast<size_t>(n));
        if (n == 0) return true;
        n = fetch(buf.data(), buf.size());
        if (n >= 0) {
            buf.resize(static_cast<size_t>(n));
            return true;
        }
        if (errno != ERANGE) return false;
    }
}

void readXattrs(const std::string& path, Inode& inode) {
    std::string names;
    auto list = [&](char* buf, size_t size) { return ::llistxattr(path.c_str(), buf, size); };
    if (!fetchXattrBuffer(names, list)) {
        // ENOTSUP: the file system has no xattrs at all.
        if (errno == ENOTSUP) return;
        failErrno(fmt::format("cannot list xattrs of {}", path));
    }
    for (size_t at = 0; at < names.size();) {
        std::string name(names.c_str() + at);
        at += name.size() + 1;
        if (std::string_view problem = xattrProblem(name, 0); !problem.empty()) {
            fail("{}: xattr {}: {}", path, name, problem);
        }
        std::string value;
        auto get = [&](char* buf, size_t size) {
            return ::lgetxattr(path.c_str(), name.c_str(), buf, size);
        };
        if (!fetchXattrBuffer(value, get)) {
            if (errno == ENODATA) continue;  // removed since it was listed
            failErrno(fmt::format("cannot read xattr {} of {}", name, path));
        }
        if (std::string_view problem = xattrProblem(name, value.size()); !problem.empty()) {
            fail("{}: xattr {}: {}", path, name, problem);
        }
        inode.setXattr(std::move(name), std::move(value));
    }
    if (std::string_view problem = xattrSetProblem(inode.xattrs); !problem.empty()) fail("{}: {}", path, problem);
}

std::shared_ptr<Inode> makeInode(const std::string& path, const struct stat& st) {
    auto inode = std::make_shared<Inode>();
    inode->mode = st.st_mode;
    inode->uid = st.st_uid;
    inode->gid = st.st_gid;
    inode->mtime_sec = st.st_mtim.tv_sec;
    inode->mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    if (S_ISREG(st.st_mode)) {
        inode->size = static_cast<uint64_t>(st.st_size);
    } else if (S_ISLNK(st.st_mode)) {
        inode->symlink_target = readSymlink(path, st);
        inode->size = inode->symlink_target.size();
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        inode->rdev_major = major(st.st_rdev);
        inode->rdev_minor = minor(st.st_rdev);
    }
    readXattrs(path, *inode);
    return inode;
}

std::vector<std::string> listDirectory(const std::string& path) {
    // O_NOFOLLOW: a directory swapped for a symlink since its lstat is not followed.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) failErrno(fmt::format("cannot open directory {}", path));
    DIR* dir = ::fdopendir(fd.get());
    if (dir == nullptr) failErrno(fmt::format("cannot open directory {}", path));
    fd.release();  // dir's now: closedir closes it
    std::vector<std::string> names;
    for (;;) {
        errno = 0;
        const dirent* ent = ::readdir(dir);
        if (ent == nullptr) break;
        const std::string_view name = ent->d_name;
        if (name != "." && name != "..") names.emplace_back(name);
    }
    const int err = errno;
    ::closedir(dir);
    if (err != 0) failErrno(fmt::format("cannot read directory {}", path), err);
    std::sort(names.begin(), names.end());
    return names;
}

class Walker {
public:
    Walker(FileTree& tree, ChunkSink& sink, unsigned layer, const std::filesystem::path& leave_out)
        : tree_(tree), sink_(sink), layer_(layer) {
        struct stat st {};
        if (!leave_out.empty() && ::stat(leave_out.c_str(), &st) == 0) leave_out_.emplace(st.st_dev, st.st_ino);
    }

    void addRoot(const std::string& path) {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) failErrno(fmt::format("cannot stat {}", path));
        if (!S_ISDIR(st.st_mode)) fail("{}: not a directory", path);
        tree_.put("/", makeInode(path, st), layer_);
        addChildren(path, "");
    }

private:
    void addChildren(const std::string& dir_path, const std::string& tree_dir) {
        for (const std::string& name : listDirectory(dir_path)) {
            const std::string path =
                dir_path.ends_with('/') ? dir_path + name : dir_path + "/" + name;
            if (FileTree::isWhiteout(name)) {
                // Whatever its type: a runtime applying the layer goes by the name alone.
                if (!tree_.applyWhiteout(tree_.find(tree_dir), name, layer_)) fail("{}: invalid whiteout name", path);
                continue;
            }
            const std::string tree_path = tree_dir + "/" + name;
            struct stat st {};
            if (::lstat(path.c_str(), &st) != 0) failErrno(fmt::format("cannot stat {}", path));
            if (S_ISDIR(st.st_mode) && leave_out_ == std::pair{st.st_dev, st.st_ino}) continue;
            if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
                auto [it, fresh] = links_.try_emplace({st.st_dev, st.st_ino});
                if (!fresh) {
                    tree_.put(tree_path, it->second, layer_);
                    continue;
                }
                it->second = makeInode(path, st);
                addEntry(path, tree_path, st, it->second);
            } else {
                addEntry(path, tree_path, st, makeInode(path, st));
            }
        }
    }

    void addEntry(const std::string& path, const std::string& tree_path, const struct stat& st,
                  std::shared_ptr<Inode> inode) {
        Inode& added = *tree_.put(tree_path, std::move(inode), layer_).inode;
        if (S_ISREG(st.st_mode)) {
            FdFileData data(path, st);
            sink_.addFile(added, data);
        } else if (S_ISDIR(st.st_mode)) {
            addChildren(path, tree_path);
        }
    }

    FileTree& tree_;
    ChunkSink& sink_;
    unsigned layer_;
    std::optional<std::pair<dev_t, ino_t>> leave_out_;
    std::map<std::pair<dev_t, ino_t>, std::shared_ptr<Inode>> links_;
};

}  // namespace

void addDirectory(const std::filesystem::path& root, FileTree& tree, ChunkSink& sink,
                  unsigned layer, const std::filesystem::path& leave_out) {
    Walker(tree, sink, layer, leave_out).addRoot(root.string());
}

}  // namespace rafs::build
