#include "builder/writer/XattrEncoding.h"

#include "format/Error.h"
#include "kernel-abi/erofs.h"

#include <cstring>
#include <limits>
#include <string_view>

namespace rafs::build {

namespace {

struct Prefix {
    std::string_view text;
    uint8_t index;
    bool whole_name;  // the ACL names are complete names with an empty suffix
};
constexpr Prefix kPrefixes[] = {
    {"user.", erofs::kXattrUser, false},
    {"system.posix_acl_access", erofs::kXattrPosixAclAccess, true},
    {"system.posix_acl_default", erofs::kXattrPosixAclDefault, true},
    {"trusted.", erofs::kXattrTrusted, false},
    {"security.", erofs::kXattrSecurity, false},
};

}  // namespace

std::vector<uint8_t> encodeXattrs(const std::vector<Xattr>& xattrs, uint16_t& icount) {
    icount = 0;
    if (xattrs.empty()) return {};
    std::vector<uint8_t> out(sizeof(erofs::XattrIbodyHeader), 0);
    for (const auto& [name, value] : xattrs) {
        const Prefix* prefix = nullptr;
        for (const Prefix& p : kPrefixes) {
            if (p.whole_name ? name == p.text : name.starts_with(p.text)) {
                prefix = &p;
                break;
            }
        }
        if (prefix == nullptr) fail("xattr '{}': namespace not supported by RAFS v6", name);
        std::string_view suffix = std::string_view(name).substr(prefix->text.size());
        if (!prefix->whole_name && suffix.empty()) fail("xattr '{}': empty name", name);
        if (suffix.size() > erofs::kNameLen) fail("xattr '{}': name longer than 255 bytes", name);
        if (value.size() > std::numeric_limits<uint16_t>::max()) {
            fail("xattr '{}': value of {} bytes exceeds 65535", name, value.size());
        }
        erofs::XattrEntry entry{static_cast<uint8_t>(suffix.size()), prefix->index,
                                static_cast<uint16_t>(value.size())};
        const size_t at = out.size();
        const size_t len = sizeof(entry) + suffix.size() + value.size();
        out.resize(at + (len + 3) / 4 * 4, 0);
        std::memcpy(out.data() + at, &entry, sizeof(entry));
        std::memcpy(out.data() + at + sizeof(entry), suffix.data(), suffix.size());
        std::memcpy(out.data() + at + sizeof(entry) + suffix.size(), value.data(), value.size());
    }
    const size_t slots = (out.size() - sizeof(erofs::XattrIbodyHeader)) / 4 + 1;
    if (slots > std::numeric_limits<uint16_t>::max()) fail("xattrs of one inode exceed the inline limit");
    icount = static_cast<uint16_t>(slots);
    return out;
}

}  // namespace rafs::build
