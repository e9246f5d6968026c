// Answers the fanotify engine's permission events, from any thread, and keeps the journal of the
// events read but not answered (PendingJournal.h) in step with the answers. Completions hold it by
// shared_ptr, so one arriving after the engine is gone finds its event already answered and does
// nothing.
#pragma once

#include "format/UniqueFd.h"
#include "daemon/engines/fanotify/PendingJournal.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace rafsd {

class EventResponder {
public:
    EventResponder(rafs::UniqueFd group, PendingJournal journal);
    ~EventResponder();
    EventResponder(const EventResponder&) = delete;
    EventResponder& operator=(const EventResponder&) = delete;

    int group() const { return group_; }
    // The event loop's own use: the batch area, orphans, owner.
    PendingJournal& journal() { return journal_; }
    // The loop's eventfd, written when journal slots free up after the loop ran short of them.
    void setWake(int fd) { wake_ = fd; }

    // Whether a whole batch fits in the journal; if not, the loop waits for the wake.
    bool hasRoomForBatch();
    uint32_t record(const PendingJournal::Entry& entry);
    void resetJournal();

    // Registers an event handed to the core; nullopt once stopping (the caller denies it).
    std::optional<uint64_t> admit(int fd, uint32_t slot);
    // The core's completion of an admitted event: allow if `error` is 0, else deny with EIO.
    void complete(int fd, uint64_t seq, int error);
    // For events never admitted.
    void respond(int fd, uint32_t slot, bool allow);
    // For an event a dead worker read: its fd number was that worker's, so there is nothing to close.
    void answerOrphan(int fd, bool allow);

    void beginStop();
    void waitIdle(std::chrono::milliseconds grace);
    void denyAll();
    void closeGroup();

    std::atomic<uint64_t> events{0};     // FAN_PRE_ACCESS events read
    std::atomic<uint64_t> allowed{0};    // answered FAN_ALLOW
    std::atomic<uint64_t> denied{0};     // answered FAN_DENY_ERRNO(EIO)
    std::atomic<uint64_t> overflows{0};  // FAN_Q_OVERFLOW

private:
    struct Pending {
        uint64_t seq;
        uint32_t slot;
    };

    // Writes the answer: 0, or the errno of a write that failed (EIO for a short one).
    int writeAnswer(int fd, bool allow);
    void answer(int fd, bool allow);
    void respondLocked(int fd, uint32_t slot, bool allow);

    std::mutex mutex_;
    std::condition_variable idle_;  // pending_ became empty
    int group_ = -1;
    int wake_ = -1;
    PendingJournal journal_;
    bool stopping_ = false;
    bool starved_ = false;  // the loop stopped reading for want of journal slots
    uint64_t next_seq_ = 0;
    // Event fd -> the event it belongs to. An fd stays open until its event is answered, so its
    // number cannot be reused by another pending event; the sequence number tells a late
    // completion from one for a newer event that got the same fd number.
    std::unordered_map<int, Pending> pending_;
};

}  // namespace rafsd
