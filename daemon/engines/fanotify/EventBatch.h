// Parsing what read(2) of a fanotify group returns: a batch of events, each its metadata followed
// by info records (include/uapi/linux/fanotify.h). Shared by the event loop and by the journal a
// new worker reads its predecessor's unanswered events from.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

namespace rafsd {

struct FanotifyEvent {
    uint64_t mask = 0;
    int32_t fd = -1;
    int32_t pid = 0;
    // A pre-content event without a range record (fsnotify_file_perm(), include/linux/fsnotify.h:
    // no position) may read any part of the file: offset 0, count kWholeFile.
    static constexpr uint64_t kWholeFile = UINT64_MAX;
    // The range record of a pre-content event.
    uint64_t offset = 0;
    uint64_t count = kWholeFile;
};

// Calls `each` for every event in `batch`, in order. Throws rafs::Error for a malformed event or an
// unknown metadata version; with `stop_at_malformed`, stops there quietly instead (an area that may
// end in zeros or a torn batch).
void forEachEvent(std::span<const std::byte> batch, const std::function<void(const FanotifyEvent&)>& each,
                  bool stop_at_malformed = false);

}  // namespace rafsd
