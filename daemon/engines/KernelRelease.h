// The running kernel's version, for what a run-time probe cannot settle: a probe that would
// disturb the kernel, or an error code that two causes share. Said in errors as `uname -r` says it.
#pragma once

#include <string>

namespace rafsd {

struct KernelRelease {
    int major = 0;
    int minor = 0;
    std::string text;  // "6.1.0-28-amd64"

    static KernelRelease running();
    // False when the release could not be read.
    bool atLeast(int want_major, int want_minor) const;
};

}  // namespace rafsd
