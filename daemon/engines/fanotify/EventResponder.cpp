#include "daemon/engines/fanotify/EventResponder.h"

#include "daemon/core/CloseOrWarn.h"
#include "daemon/core/Log.h"
#include "kernel-abi/fanotify.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rafsd {

EventResponder::EventResponder(rafs::UniqueFd group, PendingJournal journal)
    : group_(group.release()), journal_(std::move(journal)) {}

EventResponder::~EventResponder() {
    if (group_ >= 0) closeOrWarn(group_, "fanotify group");
}

bool EventResponder::hasRoomForBatch() {
    std::lock_guard lock(mutex_);
    starved_ = journal_.freeSlots() < PendingJournal::kMaxEventsPerBatch;
    return !starved_;
}

uint32_t EventResponder::record(const PendingJournal::Entry& entry) {
    std::lock_guard lock(mutex_);
    return journal_.record(entry);
}

void EventResponder::resetJournal() {
    std::lock_guard lock(mutex_);
    journal_.reset();
}

std::optional<uint64_t> EventResponder::admit(int fd, uint32_t slot) {
    std::lock_guard lock(mutex_);
    if (stopping_) return std::nullopt;
    const uint64_t seq = next_seq_++;
    pending_.emplace(fd, Pending{seq, slot});
    return seq;
}

void EventResponder::complete(int fd, uint64_t seq, int error) {
    std::lock_guard lock(mutex_);
    const auto it = pending_.find(fd);
    if (it == pending_.end() || it->second.seq != seq) return;
    const uint32_t slot = it->second.slot;
    pending_.erase(it);
    respondLocked(fd, slot, error == 0);
    if (pending_.empty()) idle_.notify_all();
}

void EventResponder::respond(int fd, uint32_t slot, bool allow) {
    std::lock_guard lock(mutex_);
    respondLocked(fd, slot, allow);
}

void EventResponder::answerOrphan(int fd, bool allow) {
    std::lock_guard lock(mutex_);
    const int error = writeAnswer(fd, allow);
    // The dead worker answered it and died before it cleared its journal slot (respondLocked): no
    // event has that number, as no new event is read before every orphan is answered.
    if (error == ENOENT) {
        log::info("fanotify: orphaned event fd {} was answered already by the worker that read it", fd);
    } else if (error != 0) {
        log::error("cannot answer orphaned fanotify event fd {}: {}", fd, std::strerror(error));
    }
}

void EventResponder::beginStop() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
}

void EventResponder::waitIdle(std::chrono::milliseconds grace) {
    std::unique_lock lock(mutex_);
    idle_.wait_for(lock, grace, [this] { return pending_.empty(); });
}

void EventResponder::denyAll() {
    std::lock_guard lock(mutex_);
    if (!pending_.empty()) log::warn("denying {} pending fanotify events with EIO", pending_.size());
    for (const auto& [fd, p] : pending_) respondLocked(fd, p.slot, false);
    pending_.clear();
}

void EventResponder::closeGroup() {
    std::lock_guard lock(mutex_);
    closeOrWarn(group_, "fanotify group");
    group_ = -1;
}

// One 8-byte write is atomic, and the lock orders it against closeGroup(). Counted first, so a
// reader woken by the answer sees it counted.
int EventResponder::writeAnswer(int fd, bool allow) {
    (allow ? allowed : denied).fetch_add(1, std::memory_order_relaxed);
    const fanotify::Response response{fd, allow ? fanotify::kAllow : fanotify::denyWithErrno(EIO)};
    const ssize_t n = ::write(group_, &response, sizeof response);
    if (n < 0) return errno;
    return static_cast<size_t>(n) == sizeof response ? 0 : EIO;
}

void EventResponder::answer(int fd, bool allow) {
    if (const int error = writeAnswer(fd, allow); error != 0) {
        log::error("cannot answer fanotify event fd {}: {}", fd, std::strerror(error));
    }
}

// The slot is cleared before the fd is closed: once closed, its number may go to a new event.
void EventResponder::respondLocked(int fd, uint32_t slot, bool allow) {
    answer(fd, allow);
    journal_.clear(slot);
    closeOrWarn(fd, "fanotify event fd");
    if (starved_ && journal_.freeSlots() >= PendingJournal::kMaxEventsPerBatch) {
        starved_ = false;
        const uint64_t one = 1;
        if (::write(wake_, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
            log::error("cannot wake the fanotify event loop: {}", std::strerror(errno));
        }
    }
}

}  // namespace rafsd
