// Inline xattrs of one inode in EROFS form: a 12-byte header, then entries with the namespace
// as a prefix index (RAFS v6 uses no shared xattrs and no long prefixes).
#pragma once

#include "builder/tree/Inode.h"

#include <cstdint>
#include <vector>

namespace rafs::build {

// Returns the inline xattr area (empty if there are no xattrs) and its i_xattr_icount.
// Throws Error for what xattrProblem or xattrSetProblem (builder/tree/Inode.h) refuses.
std::vector<uint8_t> encodeXattrs(const std::vector<Xattr>& xattrs, uint16_t& icount);

}  // namespace rafs::build
