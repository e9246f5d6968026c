// The builder's in-memory file tree: what a source produces and the writers consume.
#pragma once

#include "format/Digest.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rafs::build {

// Where one chunk of a file lives: a (blob, ci index) pair and the chunk's place in the blob's
// uncompressed address space. Equal chunks share one ChunkRef's location.
struct ChunkRef {
    uint32_t blob_index = 0;
    uint32_t ci_index = 0;
    uint64_t uncompressed_offset = 0;  // 4 KiB aligned
    uint32_t uncompressed_size = 0;
    uint64_t compressed_offset = 0;
    uint32_t compressed_size = 0;
    bool compressed = false;
    Digest digest{};
};

using Xattr = std::pair<std::string, std::string>;  // full name ("user.foo"), value

// One file system object; hardlinks are several tree entries sharing one Inode.
struct Inode {
    mode_t mode = 0;  // full st_mode: type and permission bits
    uint32_t uid = 0;
    uint32_t gid = 0;
    int64_t mtime_sec = 0;
    uint32_t mtime_nsec = 0;
    uint64_t size = 0;              // regular: content length; symlink: target length
    uint32_t rdev_major = 0;        // character and block devices
    uint32_t rdev_minor = 0;
    std::string symlink_target;     // symlinks
    std::vector<Xattr> xattrs;      // kept sorted by name, names unique
    std::vector<ChunkRef> chunks;   // regular files: ceil(size / chunk_size) entries

    // Filled by the bootstrap writer.
    uint32_t nlink = 0;
    uint64_t nid = 0;
    uint32_t ino = 0;

    bool isDir() const { return S_ISDIR(mode); }
    bool isReg() const { return S_ISREG(mode); }
    bool isLink() const { return S_ISLNK(mode); }
    void setXattr(std::string name, std::string value);
};

// Why RAFS v6 cannot store this xattr ("" if it can): a namespace other than user., trusted.,
// security. and the two POSIX ACL names, an empty suffix, a name over 255 bytes, or a value over 65535
// bytes. Sources call it to reject such xattrs with the file's name.
std::string_view xattrProblem(std::string_view name, size_t value_size);
// Why an inode of type `mode` cannot carry xattr `name` ("" if it can): Linux allows user.* xattrs
// on regular files and directories only (fs/xattr.c, xattr_permission), and would list one on a
// symlink or special file but fail to read it.
std::string_view xattrTypeProblem(std::string_view name, uint32_t mode);
// Why RAFS v6 cannot store these xattrs of one inode together ("" if it can): inline, as it keeps
// them, they take at most 65535 4-byte slots (i_xattr_icount is 16 bits). Each xattr must pass
// xattrProblem first. Also refuses an ACL value the kernel would not take (fs/posix_acl.c).
std::string_view xattrSetProblem(const std::vector<Xattr>& xattrs);

// A namespace RAFS v6 stores, as EROFS names it by a prefix index (kernel-abi/erofs.h): user.,
// trusted., security., and the two POSIX ACL names, which are whole names (an empty suffix).
struct XattrPrefix {
    std::string_view text;
    uint8_t index;
    bool whole_name;
};
// The namespace of `name`; null if RAFS v6 has none for it.
const XattrPrefix* xattrPrefixOf(std::string_view name);

}  // namespace rafs::build
