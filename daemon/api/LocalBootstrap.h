// A bootstrap as a local file of its own, for a file-backed (fanotify) mount: the inline bootstrap
// of a Nydus blob is extracted into the cache dir.
#pragma once

#include "format/Bootstrap.h"

#include <filesystem>

namespace rafsd {

// <dir>/<sha256 of the bootstrap>.boot, written under a temporary name and renamed, so a mount
// never sees a torn one; an existing one is reused if it holds the bootstrap, else written again.
// Throws rafs::Error naming the file.
std::filesystem::path extractBootstrap(const rafs::Bootstrap& bootstrap, const std::filesystem::path& dir);

}  // namespace rafsd
