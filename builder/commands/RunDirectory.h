// The directory a mkrafs run works in: `mkrafs build`'s staging directory in its output directory,
// `mkrafs convert`'s work directory. It is removed when the run ends, by an error or a signal as
// well (RemovedUnlessKept), and flock'ed while the run lives, so that a later run can tell one
// left behind by a run that was killed (SIGKILL, the OOM killer, a crash) from one in use, and
// remove it: a killed conversion leaves up to the whole image's blobs there.
#pragma once

#include "builder/commands/InterruptCleanup.h"
#include "format/UniqueFd.h"

#include <filesystem>
#include <optional>
#include <ostream>
#include <string_view>

namespace rafs::build {

class RunDirectory {
public:
    // Makes `parent`/`prefix`XXXXXX (mkdtemp) and locks it. Throws Error naming `what`.
    RunDirectory(const std::filesystem::path& parent, std::string_view prefix, std::string_view what);

    const std::filesystem::path& path() const { return dir_->path(); }

private:
    UniqueFd lock_;  // before dir_: released once the directory is gone
    std::optional<RemovedUnlessKept> dir_;
};

// Removes the directories `prefix`XXXXXX in `parent` that this user owns, that no run holds (their
// lock is free) and that were last changed over a minute ago (a run locks its directory right
// after making it), saying so on `log`. One it cannot remove is named there and left. Where flock
// cannot be taken so (NFS), none is removed.
void removeAbandonedRunDirectories(const std::filesystem::path& parent, std::string_view prefix, std::ostream& log);

}  // namespace rafs::build
