#include "builder/tree/Inode.h"

#include "kernel-abi/erofs.h"

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

std::string_view xattrSetProblem(const std::vector<Xattr>& xattrs) {
    // Each entry (fs/erofs/erofs_fs.h, erofs_xattr_entry): 4 bytes, the name's suffix and the
    // value, padded to 4; the slots count the entries after the 12-byte header, plus one.
    size_t slots = 1;
    for (const auto& [name, value] : xattrs) {
        const XattrPrefix* match = xattrPrefixOf(name);
        const size_t suffix = name.size() - (match != nullptr ? match->text.size() : 0);
        slots += (sizeof(erofs::XattrEntry) + suffix + value.size() + 3) / 4;
    }
    return slots > 65535 ? "xattrs of one inode exceed the inline limit" : std::string_view{};
}

}  // namespace rafs::build
