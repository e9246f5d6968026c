// The rule for fsid and domain_id: they become EROFS mount options and cachefiles key (file)
// names, so they keep to characters that mean nothing there.
#pragma once

#include <string_view>

namespace rafsd {

bool validFscacheName(std::string_view name);
inline constexpr const char* kFscacheNameRule = "1 to 128 letters, digits, '.', '_', ':' or '-', not . or ..";

}  // namespace rafsd
