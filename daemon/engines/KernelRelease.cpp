#include "daemon/engines/KernelRelease.h"

#include <sys/utsname.h>

#include <cstdio>

namespace rafsd {

KernelRelease KernelRelease::running() {
    KernelRelease release;
    utsname name{};
    if (::uname(&name) != 0) return release;
    release.text = name.release;
    if (std::sscanf(name.release, "%d.%d", &release.major, &release.minor) != 2) release.major = release.minor = 0;
    return release;
}

bool KernelRelease::atLeast(int want_major, int want_minor) const {
    return major > want_major || (major == want_major && minor >= want_minor);
}

}  // namespace rafsd
