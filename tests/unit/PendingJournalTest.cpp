#include "daemon/engines/fanotify/PendingJournal.h"

#include "format/Error.h"
#include "kernel-abi/fanotify.h"

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

using rafsd::PendingJournal;

namespace {

// A successor's view: the journal adopted through another fd of the same memfd.
PendingJournal successor(const PendingJournal& journal) {
    return PendingJournal::adopt(rafs::UniqueFd::duplicate(journal.fd(), "journal"));
}

// One pre-access event with a range record, as read(2) of the group returns it.
size_t putEvent(std::span<std::byte> area, size_t pos, int32_t fd, uint64_t offset, uint64_t count) {
    fanotify::EventMetadata meta{};
    meta.event_len = sizeof meta + sizeof(fanotify::EventInfoRange);
    meta.vers = fanotify::kMetadataVersion;
    meta.metadata_len = sizeof meta;
    meta.mask = fanotify::kPreAccess;
    meta.fd = fd;
    fanotify::EventInfoRange range{};
    range.hdr.info_type = fanotify::kInfoTypeRange;
    range.hdr.len = sizeof range;
    range.offset = offset;
    range.count = count;
    std::memcpy(area.data() + pos, &meta, sizeof meta);
    std::memcpy(area.data() + pos + sizeof meta, &range, sizeof range);
    return pos + meta.event_len;
}

}  // namespace

TEST_CASE("pending journal: what a dead worker recorded and did not clear is an orphan", "[fanotify]") {
    PendingJournal journal = PendingJournal::create();
    const uint32_t a = journal.record({7, 1, 100, 4096, 65536});
    journal.record({9, 1, 200, 0, 4096});
    journal.clear(a);  // answered
    const auto orphans = successor(journal).orphans();
    REQUIRE(orphans.size() == 1);
    CHECK(orphans[0].fd == 9);
    CHECK(orphans[0].ino == 200);
    CHECK(orphans[0].count == 4096);
}

TEST_CASE("pending journal: events of an unconsumed batch are orphans with an unknown file", "[fanotify]") {
    PendingJournal journal = PendingJournal::create();
    // A batch recorded and consumed, then a new one read but not yet copied to slots.
    auto area = journal.beginBatch();
    size_t used = putEvent(area, 0, 11, 0, 4096);
    journal.record({11, 1, 300, 0, 4096});
    journal.endBatch(used);
    area = journal.beginBatch();
    used = putEvent(area, 0, 12, 8192, 4096);
    used = putEvent(area, used, 13, 1 << 20, 131072);
    journal.record({12, 1, 300, 8192, 4096});  // the first was copied before the worker died
    const auto orphans = successor(journal).orphans();
    REQUIRE(orphans.size() == 3);
    CHECK((orphans[0].fd == 11 && orphans[0].ino == 300));
    CHECK((orphans[1].fd == 12 && orphans[1].ino == 300));  // the slot wins: its file is known
    CHECK((orphans[2].fd == 13 && orphans[2].ino == 0 && orphans[2].offset == 1 << 20 && orphans[2].count == 131072));
}

TEST_CASE("pending journal: a consumed batch, a reset and a new batch leave no orphans", "[fanotify]") {
    PendingJournal journal = PendingJournal::create();
    auto area = journal.beginBatch();
    const size_t used = putEvent(area, 0, 5, 0, 4096);
    const uint32_t slot = journal.record({5, 1, 1, 0, 4096});
    journal.endBatch(used);
    journal.clear(slot);
    CHECK(successor(journal).orphans().empty());
    journal.record({6, 1, 1, 0, 4096});
    journal.reset();
    CHECK(journal.freeSlots() == PendingJournal::kSlots);
    journal.beginBatch();  // empties the area: nothing read yet
    CHECK(successor(journal).orphans().empty());
}

TEST_CASE("pending journal: the owner is seen by a successor", "[fanotify]") {
    PendingJournal journal = PendingJournal::create();
    CHECK(!successor(journal).owner());
    journal.setOwner(rafsd::ProcessIdentity::self());
    const auto owner = successor(journal).owner();
    REQUIRE(owner);
    CHECK(owner->pid == ::getpid());
    CHECK(owner->alive());
}

TEST_CASE("pending journal: a memfd that is not a journal is refused", "[fanotify]") {
    rafs::UniqueFd fd(::memfd_create("not-a-journal", MFD_CLOEXEC));
    REQUIRE(fd.get() >= 0);
    CHECK_THROWS_WITH(PendingJournal::adopt(std::move(fd)), Catch::Matchers::Contains("has 0 bytes"));
    PendingJournal journal = PendingJournal::create();
    rafs::UniqueFd copy = rafs::UniqueFd::duplicate(journal.fd(), "journal");
    const uint64_t garbage = 1;
    REQUIRE(::pwrite(copy.get(), &garbage, sizeof garbage, 0) == sizeof garbage);
    CHECK_THROWS_WITH(PendingJournal::adopt(std::move(copy)), Catch::Matchers::Contains("not a version 1 journal"));
}
