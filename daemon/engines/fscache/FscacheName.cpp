#include "daemon/engines/fscache/FscacheName.h"

#include <algorithm>

namespace rafsd {

bool validFscacheName(std::string_view name) {
    return !name.empty() && name.size() <= 128 && std::ranges::all_of(name, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == ':' || c == '-';
    });
}

}  // namespace rafsd
