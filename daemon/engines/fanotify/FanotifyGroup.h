// The engine's fanotify group (include/uapi/linux/fanotify.h, Linux 6.14+): creating a
// pre-content group, checking that the kernel has what the engine needs, and marking cache files
// for FAN_PRE_ACCESS.
#pragma once

#include "format/UniqueFd.h"

#include <filesystem>

namespace rafsd {

// A FAN_CLASS_PRE_CONTENT group with an unlimited queue and marks. Throws rafs::Error naming what
// the kernel or the process lacks.
rafs::UniqueFd createPreContentGroup();

// Throws rafs::Error naming what the kernel lacks for the fanotify engine: pre-content events, or
// EROFS.
void checkPreContentKernel();

// Each pending permission event pins an fd in the reader: raise RLIMIT_NOFILE to its hard limit.
void raiseFdLimit();

// Adds (idempotent) or removes the FAN_PRE_ACCESS mark of the file open at `fd`. markPreAccess
// throws rafs::Error naming `path`, and saying so when its file system cannot be marked;
// unmarkPreAccess returns 0 or the errno (ENOENT: it was not marked).
void markPreAccess(int group, int fd, const std::filesystem::path& path);
int unmarkPreAccess(int group, int fd);

}  // namespace rafsd
