#include "builder/tree/Inode.h"

#include <algorithm>
#include <array>

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

// Namespaces of RAFS v6 (EROFS prefix indexes 1, 2, 3, 4, 6); the ACL names are whole names.
struct Prefix {
    std::string_view text;
    bool whole_name;
};
constexpr std::array<Prefix, 5> kPrefixes{{
    {"user.", false},
    {"trusted.", false},
    {"security.", false},
    {"system.posix_acl_access", true},
    {"system.posix_acl_default", true},
}};

const Prefix* prefixOf(std::string_view name) {
    auto match = std::find_if(kPrefixes.begin(), kPrefixes.end(), [&](const Prefix& p) {
        return p.whole_name ? name == p.text : name.starts_with(p.text);
    });
    return match == kPrefixes.end() ? nullptr : &*match;
}

}  // namespace

std::string_view xattrProblem(std::string_view name, size_t value_size) {
    const Prefix* match = prefixOf(name);
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
        const Prefix* match = prefixOf(name);
        const size_t suffix = name.size() - (match != nullptr ? match->text.size() : 0);
        slots += (4 + suffix + value.size() + 3) / 4;
    }
    return slots > 65535 ? "xattrs of one inode exceed the inline limit" : std::string_view{};
}

}  // namespace rafs::build
