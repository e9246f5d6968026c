#include "builder/writer/XattrEncoding.h"

#include "format/Error.h"
#include "kernel-abi/erofs.h"

#include <cstring>
#include <string_view>

namespace rafs::build {

std::vector<uint8_t> encodeXattrs(const std::vector<Xattr>& xattrs, uint16_t& icount) {
    icount = 0;
    if (xattrs.empty()) return {};
    std::vector<uint8_t> out(sizeof(erofs::XattrIbodyHeader), 0);
    if (std::string_view problem = xattrSetProblem(xattrs); !problem.empty()) fail("{}", problem);
    for (const auto& [name, value] : xattrs) {
        if (std::string_view problem = xattrProblem(name, value.size()); !problem.empty()) {
            fail("xattr '{}': {}", name, problem);
        }
        const XattrPrefix* prefix = xattrPrefixOf(name);
        const std::string_view suffix = std::string_view(name).substr(prefix->text.size());
        erofs::XattrEntry entry{static_cast<uint8_t>(suffix.size()), prefix->index,
                                static_cast<uint16_t>(value.size())};
        const size_t at = out.size();
        const size_t len = sizeof(entry) + suffix.size() + value.size();
        out.resize(at + (len + 3) / 4 * 4, 0);
        std::memcpy(out.data() + at, &entry, sizeof(entry));
        std::memcpy(out.data() + at + sizeof(entry), suffix.data(), suffix.size());
        std::memcpy(out.data() + at + sizeof(entry) + suffix.size(), value.data(), value.size());
    }
    icount = static_cast<uint16_t>((out.size() - sizeof(erofs::XattrIbodyHeader)) / 4 + 1);  // xattrSetProblem bounds it
    return out;
}

}  // namespace rafs::build
