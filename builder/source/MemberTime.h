// A tar member's mtime as libarchive reads it, made right for times before 1970 with a fraction
// of a second.
#pragma once

#include <cstdint>

struct archive_entry;

namespace rafs::build {

struct MemberTime {
    int64_t sec = 0;    // rounded down: -1.25 s is -2 s + 750000000 ns
    uint32_t nsec = 0;  // 0 to 999999999
};

// libarchive up to at least 3.6 (Debian 12's) reads pax's "mtime=-1.25" as -1 s and +0.25 s: the
// sign reaches the whole seconds only. A one-member archive read once tells whether this
// libarchive does so, and only then is such a time corrected. (A time between -1 and 0 s is read
// as positive: the sign of "-0" is lost before it can be seen.) Throws Error for nanoseconds out
// of range.
MemberTime memberMtime(archive_entry* entry);

}  // namespace rafs::build
