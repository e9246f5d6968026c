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

std::string_view xattrProblem(std::string_view name, size_t value_size) {
    // Namespaces of RAFS v6 (EROFS prefix indexes 1, 2, 3, 4, 6); the ACL names are whole names.
    struct Prefix {
        std::string_view text;
        bool whole_name;
    };
    static constexpr std::array<Prefix, 5> kPrefixes{{
        {"user.", false},
        {"trusted.", false},
        {"security.", false},
        {"system.posix_acl_access", true},
        {"system.posix_acl_default", true},
    }};
    auto match = std::find_if(kPrefixes.begin(), kPrefixes.end(), [&](const Prefix& p) {
        return p.whole_name ? name == p.text : name.starts_with(p.text);
    });
    if (match == kPrefixes.end()) return "namespace not supported by RAFS v6";
    const size_t suffix = name.size() - match->text.size();
    if (!match->whole_name && suffix == 0) return "empty name after the namespace";
    if (suffix > 255) return "name longer than 255 bytes after the namespace";
    if (value_size > 65535) return "value longer than 65535 bytes";
    return {};
}

}  // namespace rafs::build
