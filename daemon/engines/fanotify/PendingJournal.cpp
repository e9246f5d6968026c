#include "daemon/engines/fanotify/PendingJournal.h"

#include "format/Error.h"
#include "daemon/engines/fanotify/EventBatch.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>

namespace rafsd {

namespace {

using rafs::fail;
using rafs::failErrno;

constexpr uint64_t kMagic = 0x4c4e524a53464152;  // "RAFSJRNL"
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 4096;

}  // namespace

// Stores that a successor must see are made through atomic_ref with release order: the successor
// is another process reading the same pages after this one died, so plain stores the compiler may
// sink past the answer's write(2) would not do.
struct PendingJournal::Header {
    uint64_t magic;
    uint32_t version;
    uint32_t slot_count;
    uint32_t batch_bytes;
    uint32_t batch_unconsumed;  // 1 from beginBatch() to endBatch()
    uint64_t batch_used;        // bytes of the last batch, emptied by the next beginBatch()
    int32_t owner_pid;
    uint32_t pad;
    uint64_t owner_start_time;
};
static_assert(sizeof(PendingJournal::Header) == 48);

struct PendingJournal::Slot {
    uint32_t used;
    int32_t fd;
    uint64_t dev;
    uint64_t ino;
    uint64_t offset;
    uint64_t count;
};
static_assert(sizeof(PendingJournal::Slot) == 40);

namespace {

constexpr size_t kMapBytes = kHeaderBytes + PendingJournal::kBatchBytes + PendingJournal::kSlots * 40;

void* mapJournal(int fd) {
    void* map = ::mmap(nullptr, kMapBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) failErrno("mmap of the fanotify journal");
    return map;
}

uint32_t load(const uint32_t& field) { return std::atomic_ref(const_cast<uint32_t&>(field)).load(std::memory_order_acquire); }
void store(uint32_t& field, uint32_t value) { std::atomic_ref(field).store(value, std::memory_order_release); }

}  // namespace

PendingJournal::PendingJournal(rafs::UniqueFd fd) : fd_(std::move(fd)), map_(mapJournal(fd_.get())) {}

PendingJournal::PendingJournal(PendingJournal&& other) noexcept
    : fd_(std::move(other.fd_)), map_(other.map_), free_(std::move(other.free_)) {
    other.map_ = nullptr;
}

PendingJournal::~PendingJournal() {
    if (map_ != nullptr) ::munmap(map_, kMapBytes);
}

PendingJournal::Header& PendingJournal::header() const { return *static_cast<Header*>(map_); }
std::byte* PendingJournal::batch() const { return static_cast<std::byte*>(map_) + kHeaderBytes; }
PendingJournal::Slot* PendingJournal::slots() const {
    return reinterpret_cast<Slot*>(static_cast<std::byte*>(map_) + kHeaderBytes + kBatchBytes);
}

PendingJournal PendingJournal::create() {
    rafs::UniqueFd fd(::memfd_create("rafsd-fanotify-journal", MFD_CLOEXEC));
    if (fd.get() < 0) failErrno("memfd_create for the fanotify journal");
    if (::ftruncate(fd.get(), static_cast<off_t>(kMapBytes)) != 0) failErrno("sizing the fanotify journal");
    PendingJournal journal(std::move(fd));
    Header& h = journal.header();
    h.version = kVersion;
    h.slot_count = kSlots;
    h.batch_bytes = kBatchBytes;
    std::atomic_ref(h.magic).store(kMagic, std::memory_order_release);
    journal.reset();
    return journal;
}

PendingJournal PendingJournal::adopt(rafs::UniqueFd fd) {
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) failErrno("fstat of the kept fanotify journal");
    if (static_cast<uint64_t>(st.st_size) != kMapBytes) {
        fail("the kept fanotify journal has {} bytes, expected {}", st.st_size, kMapBytes);
    }
    PendingJournal journal(std::move(fd));
    const Header& h = journal.header();
    if (h.magic != kMagic || h.version != kVersion || h.slot_count != kSlots || h.batch_bytes != kBatchBytes) {
        fail("the kept fanotify journal is not a version {} journal of this rafsd", kVersion);
    }
    for (uint32_t i = kSlots; i-- > 0;) {
        if (load(journal.slots()[i].used) == 0) journal.free_.push_back(i);
    }
    return journal;
}

void PendingJournal::setOwner(const ProcessIdentity& owner) {
    Header& h = header();
    h.owner_start_time = owner.start_time;
    std::atomic_ref(h.owner_pid).store(owner.pid, std::memory_order_release);
}

std::optional<ProcessIdentity> PendingJournal::owner() const {
    const Header& h = header();
    if (h.owner_pid <= 0) return std::nullopt;
    return ProcessIdentity{h.owner_pid, h.owner_start_time};
}

std::span<std::byte> PendingJournal::beginBatch() {
    Header& h = header();
    std::memset(batch(), 0, std::min<uint64_t>(h.batch_used, kBatchBytes));
    h.batch_used = 0;
    store(h.batch_unconsumed, 1);
    return {batch(), kBatchBytes};
}

void PendingJournal::endBatch(size_t used) {
    Header& h = header();
    h.batch_used = used;
    store(h.batch_unconsumed, 0);
}

uint32_t PendingJournal::record(const Entry& entry) {
    if (free_.empty()) fail("fanotify journal full: {} events pending", kSlots);
    const uint32_t index = free_.back();
    free_.pop_back();
    Slot& slot = slots()[index];
    slot.fd = entry.fd;
    slot.dev = entry.dev;
    slot.ino = entry.ino;
    slot.offset = entry.offset;
    slot.count = entry.count;
    store(slot.used, 1);
    return index;
}

void PendingJournal::clear(uint32_t slot) {
    store(slots()[slot].used, 0);
    free_.push_back(slot);
}

std::vector<PendingJournal::Entry> PendingJournal::orphans() const {
    std::map<int32_t, Entry> by_fd;
    for (uint32_t i = 0; i < kSlots; ++i) {
        const Slot& s = slots()[i];
        if (load(s.used) != 0) by_fd[s.fd] = {s.fd, s.dev, s.ino, s.offset, s.count};
    }
    if (load(header().batch_unconsumed) != 0) {
        // Read into but not yet copied to slots: the events are there, their files are not known.
        // beginBatch() emptied the area, so the events end at the first zero length.
        forEachEvent(
            std::span<const std::byte>(batch(), kBatchBytes),
            [&](const FanotifyEvent& e) {
                if (e.fd >= 0 && !by_fd.contains(e.fd)) by_fd[e.fd] = {e.fd, 0, 0, e.offset, e.count};
            },
            true);
    }
    std::vector<Entry> out;
    for (const auto& [fd, e] : by_fd) out.push_back(e);
    return out;
}

void PendingJournal::reset() {
    Header& h = header();
    std::memset(batch(), 0, kBatchBytes);
    h.batch_used = 0;
    store(h.batch_unconsumed, 0);
    free_.clear();
    for (uint32_t i = kSlots; i-- > 0;) {
        store(slots()[i].used, 0);
        free_.push_back(i);
    }
}

}  // namespace rafsd
