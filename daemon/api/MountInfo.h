// What the kernel has mounted where (proc(5): /proc/self/mountinfo, statfs(2)).
#pragma once

#include <filesystem>
#include <optional>
#include <set>
#include <string>

namespace rafsd {

// The source of the EROFS file system mounted on `dir` (its topmost mount), if there is one: a
// second mount there would hide the first and the files its readers have open.
std::optional<std::string> erofsMountOn(const std::filesystem::path& dir);

// Whether the topmost mount on `dir` is EROFS with `option` among its super options (for an
// fscache mount "fsid=ID": the one rafsd recorded there, and not somebody else's).
bool erofsMountWithOption(const std::filesystem::path& dir, const std::string& option);

// The sources of every EROFS mount in this mount namespace: for a file-backed mount, the path of
// the bootstrap file it was mounted from.
std::set<std::string> erofsMountSources();

// True if `dir` is on an EROFS file system (e.g. one a dead daemon left mounted there); false if
// it does not exist.
bool hasErofsMount(const std::filesystem::path& dir);

}  // namespace rafsd
