#include "builder/tree/Inode.h"

#include "kernel-abi/erofs.h"

#include <sys/stat.h>

#include <algorithm>

namespace rafs::build {

void Inode::setXattr(std::string name, std::string value) {
    auto it = std::lower_bound(xattrs.begin(), xattrs.end(), name,
                               [](const Xattr& x, const std::string& n) { return x.first < n; });
    if (it != xattrs.end() && it->first == name) {
        it->second = std::move(value);
    } else {
        xattrs.emplace(it, std::move(name), std::move(value));
    }
}

namespace {

constexpr XattrPrefix kPrefixes[] = {
    {"user.", erofs::kXattrUser, false},
    {"system.posix_acl_access", erofs::kXattrPosixAclAccess, true},
    {"system.posix_acl_default", erofs::kXattrPosixAclDefault, true},
    {"trusted.", erofs::kXattrTrusted, false},
    {"security.", erofs::kXattrSecurity, false},
};

// Whether `value` is a POSIX ACL the kernel takes, as fs/posix_acl.c checks one
// (posix_acl_from_xattr, then posix_acl_valid): version 2, then 8-byte entries of tag, permission
// and id, in the order user::, user:ID..., group::, group:ID..., mask::, other::, the mask required
// with named entries. A value it refuses makes getxattr(2) and every permission check of the file
// fail with EOPNOTSUPP or EINVAL: the file is unreadable to all but its owner.
bool validAcl(std::string_view value) {
    const auto u16 = [&](size_t at) { return static_cast<uint16_t>(uint8_t(value[at]) | uint8_t(value[at + 1]) << 8); };
    if (value.size() < 4 || (value.size() - 4) % 8 != 0) return false;
    if (u16(0) != 2 || u16(2) != 0) return false;
    enum : uint16_t { kUserObj = 0x01, kUser = 0x02, kGroupObj = 0x04, kGroup = 0x08, kMask = 0x10, kOther = 0x20 };
    uint16_t state = kUserObj;
    bool needs_mask = false;
    for (size_t at = 4; at < value.size(); at += 8) {
        const uint16_t tag = u16(at);
        if ((u16(at + 2) & ~7u) != 0) return false;
        if (tag == kUserObj && state == kUserObj) {
            state = kUser;
        } else if (tag == kUser && state == kUser) {
            needs_mask = true;
        } else if (tag == kGroupObj && state == kUser) {
            state = kGroup;
        } else if (tag == kGroup && state == kGroup) {
            needs_mask = true;
        } else if (tag == kMask && state == kGroup) {
            state = kOther;
        } else if (tag == kOther && (state == kOther || (state == kGroup && !needs_mask))) {
            state = 0;
        } else {
            return false;
        }
    }
    // No entry at all is no ACL (posix_acl_from_xattr gives none), which the kernel takes.
    return state == 0 || value.size() == 4;
}

}  // namespace

const XattrPrefix* xattrPrefixOf(std::string_view name) {
    for (const XattrPrefix& p : kPrefixes) {
        if (p.whole_name ? name == p.text : name.starts_with(p.text)) return &p;
    }
    return nullptr;
}

std::string_view xattrProblem(std::string_view name, size_t value_size) {
    const XattrPrefix* match = xattrPrefixOf(name);
    if (match == nullptr) return "namespace not supported by RAFS v6";
    const size_t suffix = name.size() - match->text.size();
    if (!match->whole_name && suffix == 0) return "empty name after the namespace";
    // The whole name, as Linux bounds it (XATTR_NAME_MAX in include/uapi/linux/limits.h): the
    // kernel would list a longer one but fail getxattr(2) of it with ERANGE.
    if (name.size() > 255) return "name longer than 255 bytes";
    if (value_size > 65535) return "value longer than 65535 bytes";
    return {};
}

std::string_view xattrTypeProblem(std::string_view name, uint32_t mode) {
    if (name.starts_with("user.") && !S_ISREG(mode) && !S_ISDIR(mode)) {
        return "user.* xattrs are allowed on regular files and directories only: Linux would list it but refuse to "
               "read it";
    }
    return {};
}

std::string_view xattrSetProblem(const std::vector<Xattr>& xattrs) {
    // Each entry (fs/erofs/erofs_fs.h, erofs_xattr_entry): 4 bytes, the name's suffix and the
    // value, padded to 4; the slots count the entries after the 12-byte header, plus one.
    size_t slots = 1;
    for (const auto& [name, value] : xattrs) {
        const XattrPrefix* match = xattrPrefixOf(name);
        if (match != nullptr && match->whole_name && !validAcl(value)) {
            return "an ACL xattr (system.posix_acl_*) that is no valid POSIX ACL (its version, size, tags, "
                   "permissions or their order), which the kernel would refuse";
        }
        const size_t suffix = name.size() - (match != nullptr ? match->text.size() : 0);
        slots += (sizeof(erofs::XattrEntry) + suffix + value.size() + 3) / 4;
    }
    return slots > 65535 ? "xattrs of one inode exceed the inline limit" : std::string_view{};
}

}  // namespace rafs::build
