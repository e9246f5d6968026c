// The permission events a fanotify worker has read but not yet answered, kept in memory that
// outlives the worker: a memfd that the supervisor and systemd's fd store hold too (KeptFds.h).
//
// Why: after the worker dies, the kernel keeps each such event pending on the group and matches an
// answer to it by its fd number alone (fs/notify/fanotify/fanotify_user.c,
// process_access_response()); the reader stays blocked until then. A new worker can complete it
// if it knows the number, the file and the range, and that is what is recorded here, before the
// event is handled. Fd numbers are reused, so the new worker answers every orphan before it reads
// any new event.
//
// No event leaves the kernel's queue without a record: the worker reads each batch straight into
// the journal's batch area, copies every event into a slot (adding the file's identity), and only
// then marks the batch consumed. A slot is cleared after its event is answered and before the
// event's fd is closed, so a slot never names an fd number that a newer event may have been given.
#pragma once

#include "format/UniqueFd.h"
#include "daemon/process/ProcessIdentity.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace rafsd {

class PendingJournal {
public:
    static constexpr size_t kBatchBytes = 64 * 1024;
    static constexpr uint32_t kSlots = 16384;
    // The most events one batch can hold (an event is at least its 24-byte metadata).
    static constexpr uint32_t kMaxEventsPerBatch = kBatchBytes / 24;

    struct Entry {
        int32_t fd = -1;
        uint64_t dev = 0;  // st_dev, st_ino of the event's file; both 0 when it is not known
        uint64_t ino = 0;
        uint64_t offset = 0;
        uint64_t count = 0;
    };

    // A new, empty journal in a new memfd.
    static PendingJournal create();
    // The journal in `fd` (a memfd kept for a previous worker). Throws rafs::Error if it is not one.
    static PendingJournal adopt(rafs::UniqueFd fd);

    PendingJournal(PendingJournal&& other) noexcept;
    PendingJournal& operator=(PendingJournal&&) = delete;
    PendingJournal(const PendingJournal&) = delete;
    ~PendingJournal();

    int fd() const { return fd_.get(); }

    // The worker that records into it (pid and start time from /proc/PID/stat), so that a new rafsd
    // taking the journal over from systemd's fd store can end a predecessor still reading the group.
    void setOwner(const ProcessIdentity& owner);
    std::optional<ProcessIdentity> owner() const;

    // The area the next batch is read into, emptied of the previous batch; the batch counts as
    // unconsumed until endBatch().
    std::span<std::byte> beginBatch();
    void endBatch(size_t used);

    uint32_t freeSlots() const { return static_cast<uint32_t>(free_.size()); }
    // Records a pending event; the caller checked freeSlots() before reading the batch.
    uint32_t record(const Entry& entry);
    void clear(uint32_t slot);

    // What a dead worker left: every recorded event and every event of an unconsumed batch (those
    // with an unknown file), one per fd number.
    std::vector<Entry> orphans() const;
    // Forgets everything recorded (after every orphan was answered).
    void reset();

    // The layout in the memfd (PendingJournal.cpp).
    struct Header;
    struct Slot;

private:
    explicit PendingJournal(rafs::UniqueFd fd);
    Header& header() const;
    Slot* slots() const;
    std::byte* batch() const;

    rafs::UniqueFd fd_;
    void* map_ = nullptr;
    std::vector<uint32_t> free_;  // this process's free list of slots
};

}  // namespace rafsd
