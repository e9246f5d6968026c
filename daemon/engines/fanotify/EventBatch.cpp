#include "daemon/engines/fanotify/EventBatch.h"

#include "format/Error.h"
#include "kernel-abi/fanotify.h"

#include <cstring>

namespace rafsd {

namespace {

// The range record among an event's info records, walked by their lengths.
void findRange(std::span<const std::byte> info, FanotifyEvent& event) {
    size_t pos = 0;
    while (info.size() - pos >= sizeof(fanotify::EventInfoHeader)) {
        fanotify::EventInfoHeader header{};
        std::memcpy(&header, info.data() + pos, sizeof header);
        if (header.len < sizeof header || header.len > info.size() - pos) return;
        if (header.info_type == fanotify::kInfoTypeRange && header.len >= sizeof(fanotify::EventInfoRange)) {
            fanotify::EventInfoRange record{};
            std::memcpy(&record, info.data() + pos, sizeof record);
            event.offset = record.offset;
            event.count = record.count;
            return;
        }
        pos += header.len;
    }
}

}  // namespace

void forEachEvent(std::span<const std::byte> batch, const std::function<void(const FanotifyEvent&)>& each,
                  bool stop_at_malformed) {
    size_t pos = 0;
    while (batch.size() - pos >= sizeof(fanotify::EventMetadata)) {
        fanotify::EventMetadata meta{};
        std::memcpy(&meta, batch.data() + pos, sizeof meta);
        const bool malformed = meta.event_len < sizeof meta || meta.event_len > batch.size() - pos ||
                               meta.metadata_len < sizeof meta || meta.metadata_len > meta.event_len;
        if (stop_at_malformed && (malformed || meta.vers != fanotify::kMetadataVersion)) return;
        if (meta.vers != fanotify::kMetadataVersion) {
            rafs::fail("fanotify event version {}, expected {}", meta.vers, fanotify::kMetadataVersion);
        }
        if (malformed) {
            rafs::fail("malformed fanotify event: length {}, metadata length {}", meta.event_len, meta.metadata_len);
        }
        FanotifyEvent event{meta.mask, meta.fd, meta.pid};
        findRange(batch.subspan(pos + meta.metadata_len, meta.event_len - meta.metadata_len), event);
        each(event);
        pos += meta.event_len;
    }
}

}  // namespace rafsd
