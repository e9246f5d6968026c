#include "daemon/engines/fscache/FscacheName.h"

#include <algorithm>

namespace rafsd {

bool validFscacheName(std::string_view name) {
    // "." and ".." name directories, not a volume of their own: rafsd's state dir of volume ".."
    // would be its cache dir, which the collector would remove whole.
    if (name == "." || name == "..") return false;
    return !name.empty() && name.size() <= 128 && std::ranges::all_of(name, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == ':' || c == '-';
    });
}

}  // namespace rafsd
