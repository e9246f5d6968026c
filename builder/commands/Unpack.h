// `mkrafs unpack`: materialises an image without a daemon. Every chunk read is decompressed and
// checked against its digest (blob.digest section or chunk info table) before it is written.
#pragma once

#include <string>

namespace rafs::build {

struct UnpackOptions {
    std::string bootstrap;  // a bootstrap, or a blob with an inline bootstrap (as for inspect)
    std::string blob_dir;   // blobs named by blob id; default: the directory of `bootstrap`
    // If set: writes raw_dir/<blob-id> for every blob, its uncompressed address space (chunks at
    // their uncompressed offsets, sparse elsewhere, size = uncompressed_size), so the kernel can
    // mount(bootstrap, mnt, "erofs", MS_RDONLY, "device=raw_dir/<id>,...") on its own. The
    // directory is created if missing.
    std::string raw_dir;
    // If set: writes the tree as a pax tar to this file, or to stdout for "-": every type but
    // sockets (which tar cannot hold), mtime with nanoseconds, xattrs (POSIX ACL xattrs included)
    // as SCHILY.xattr records, hardlinks as link entries, device numbers. The root directory
    // itself is not an entry; paths are relative ("etc/passwd").
    std::string tar;
};

// Output files are written under a temporary name in their directory and renamed when complete;
// on error the temporary is removed and rafs::Error is thrown naming the problem.
void unpack(const UnpackOptions& options);

}  // namespace rafs::build
