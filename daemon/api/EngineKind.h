// Which kernel interface serves a mount; auto picks fscache where /dev/cachefiles exists, else
// fanotify (ImageService::resolveEngine). Shared by the config file, the control protocol and
// rafsctl.
#pragma once

#include <optional>
#include <string_view>

namespace rafsd {

enum class EngineKind { Auto, Fanotify, Fscache };

std::string_view engineName(EngineKind engine);
std::optional<EngineKind> parseEngineKind(std::string_view name);
// For messages: "auto, fanotify, fscache".
inline constexpr std::string_view kEngineNames = "auto, fanotify, fscache";

}  // namespace rafsd
