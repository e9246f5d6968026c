#include "daemon/api/EngineKind.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace rafsd {

namespace {

constexpr std::pair<std::string_view, EngineKind> kEngines[] = {
    {"auto", EngineKind::Auto}, {"fanotify", EngineKind::Fanotify}, {"fscache", EngineKind::Fscache}};

}  // namespace

std::string_view engineName(EngineKind engine) {
    // Every enumerator is in the table.
    return std::ranges::find(kEngines, engine, &std::pair<std::string_view, EngineKind>::second)->first;
}

std::optional<EngineKind> parseEngineKind(std::string_view name) {
    const auto it = std::ranges::find(kEngines, name, &std::pair<std::string_view, EngineKind>::first);
    if (it == std::end(kEngines)) return std::nullopt;
    return it->second;
}

}  // namespace rafsd
