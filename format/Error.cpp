#include "format/Error.h"

#include <cerrno>
#include <cstring>

namespace rafs {

std::string quote(std::string_view text) {
    std::string out = "'";
    for (char c : text) {
        auto byte = static_cast<unsigned char>(c);
        if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (byte < 0x20 || byte == 0x7f) out += fmt::format("\\x{:02x}", byte);
        else out += c;
    }
    return out + "'";
}

void failErrno(std::string_view what) { failErrno(what, errno); }

void failErrno(std::string_view what, int err) {
    throw SystemError(fmt::format("{}: {}", what, std::strerror(err)), err);
}

}  // namespace rafs
