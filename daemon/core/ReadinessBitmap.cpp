#include "daemon/core/ReadinessBitmap.h"
#include "format/FileIo.h"

#include "format/Error.h"
#include "format/FileLock.h"
#include "format/UniqueFd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <span>
#include <vector>

namespace rafsd {

namespace {

constexpr char kMagic[8] = {'R', 'A', 'F', 'S', 'C', 'M', 'A', 'P'};
constexpr size_t kBlobIdLength = 64;

struct ChunkMapHeader {
    char magic[8];
    uint32_t version;  // stays at offset 8 in every version, so it can be checked first
    uint32_t chunk_count;
    uint64_t blob_size;
    char blob_id[kBlobIdLength];
    uint8_t fingerprint[rafs::kDigestSize];  // of the chunks the bits vouch for
    uint32_t reserved;
    uint32_t checksum;  // CRC32 of the bytes before it
};
static_assert(sizeof(ChunkMapHeader) == 128);
static_assert(offsetof(ChunkMapHeader, version) == 8);
static_assert(offsetof(ChunkMapHeader, blob_size) == 16);
static_assert(offsetof(ChunkMapHeader, blob_id) == 24);
static_assert(offsetof(ChunkMapHeader, fingerprint) == 88);
static_assert(offsetof(ChunkMapHeader, checksum) == 124);

constexpr uint64_t kHeaderSize = sizeof(ChunkMapHeader);

uint32_t headerChecksum(const ChunkMapHeader& header) {
    return static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(&header),
                                       offsetof(ChunkMapHeader, checksum)));
}

size_t bitmapBytes(uint32_t chunk_count) { return (size_t{chunk_count} + 7) / 8; }

void checkBlobId(std::string_view blob_id) {
    const bool hex = std::all_of(blob_id.begin(), blob_id.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    });
    if (blob_id.size() != kBlobIdLength || !hex)
        rafs::fail("chunk map: blob id '{}' is not 64 lowercase hex characters", blob_id);
}

void writeAll(int fd, std::span<const uint8_t> data, uint64_t offset, const std::filesystem::path& path) {
    rafs::pwriteAll(fd, data, offset, path.string());
}

void readAll(int fd, std::span<uint8_t> out, uint64_t offset, const std::filesystem::path& path) {
    rafs::preadExactly(fd, out, offset, path.string());
}

ChunkMapHeader makeHeader(std::string_view blob_id, uint32_t chunk_count, uint64_t blob_size,
                          const rafs::Digest& fingerprint) {
    ChunkMapHeader header{};
    std::memcpy(header.magic, kMagic, sizeof kMagic);
    header.version = ReadinessBitmap::kFormatVersion;
    header.chunk_count = chunk_count;
    header.blob_size = blob_size;
    std::memcpy(header.blob_id, blob_id.data(), kBlobIdLength);
    std::memcpy(header.fingerprint, fingerprint.data(), fingerprint.size());
    header.checksum = headerChecksum(header);
    return header;
}

}  // namespace

struct ReadinessBitmap::State {
    State(int fd, size_t bytes) : file(fd), bits(bytes) {}

    // Fills bits and count from the file behind fd if it is the bitmap `expected` describes;
    // otherwise changes nothing and returns why the file cannot be used.
    std::string load(const std::filesystem::path& path, const ChunkMapHeader& expected);

    // Replaces the file's content with an empty bitmap, in place: the file is locked (see
    // open()), and a crash halfway leaves a short file, which load() rejects.
    void reset(const std::filesystem::path& path, const ChunkMapHeader& header);

    rafs::UniqueFd file;  // nothing to lose on a close error: flush() reports durability
    std::vector<std::atomic<uint8_t>> bits;
    std::atomic<uint32_t> count{0};
    // Serialises the pwrite()s of bitmap bytes, so the last write of a byte carries every bit set
    // before it (see set()).
    std::mutex write_mutex;
};

std::string ReadinessBitmap::State::load(const std::filesystem::path& path,
                                         const ChunkMapHeader& expected) {
    struct stat info {};
    if (::fstat(file.get(), &info) != 0) rafs::failErrno(fmt::format("{}: fstat", path.string()));
    const auto length = static_cast<uint64_t>(info.st_size);
    if (length < kHeaderSize) return fmt::format("file of {} bytes has no complete header", length);

    ChunkMapHeader header{};
    readAll(file.get(), {reinterpret_cast<uint8_t*>(&header), sizeof header}, 0, path);
    if (std::memcmp(header.magic, kMagic, sizeof kMagic) != 0) return "not a chunk map (bad magic)";
    if (header.version != expected.version)
        return fmt::format("format version {}, expected {}", header.version, expected.version);
    if (header.checksum != headerChecksum(header)) return "header checksum mismatch";
    if (std::memcmp(header.blob_id, expected.blob_id, kBlobIdLength) != 0)
        return fmt::format("it belongs to blob {}",
                           std::string_view(header.blob_id, kBlobIdLength));
    if (header.chunk_count != expected.chunk_count)
        return fmt::format("chunk count {}, expected {}", header.chunk_count, expected.chunk_count);
    if (header.blob_size != expected.blob_size)
        return fmt::format("blob size {}, expected {}", header.blob_size, expected.blob_size);
    if (std::memcmp(header.fingerprint, expected.fingerprint, sizeof header.fingerprint) != 0)
        return "its chunks were filled under another chunk table (other chunk digests or places)";
    const uint64_t expected_length = kHeaderSize + bits.size();
    if (length != expected_length)
        return fmt::format("length {}, expected {}", length, expected_length);

    std::vector<uint8_t> bytes(bits.size());
    readAll(file.get(), bytes, kHeaderSize, path);
    const uint32_t tail_bits = expected.chunk_count % 8;
    if (tail_bits != 0 && (bytes.back() >> tail_bits) != 0) return "bits set past the last chunk";
    uint32_t set_bits = 0;
    for (size_t i = 0; i < bytes.size(); ++i) {
        bits[i].store(bytes[i], std::memory_order_relaxed);
        set_bits += static_cast<uint32_t>(std::popcount(bytes[i]));
    }
    count.store(set_bits, std::memory_order_relaxed);
    return {};
}

// No fsync: a crash can only leave a short or zero-filled file, which load() rejects, and a
// rejected file is simply reset again.
void ReadinessBitmap::State::reset(const std::filesystem::path& path, const ChunkMapHeader& header) {
    if (::ftruncate(file.get(), 0) != 0) rafs::failErrno(fmt::format("{}: truncate", path.string()));
    std::vector<uint8_t> content(kHeaderSize + bits.size(), 0);
    std::memcpy(content.data(), &header, sizeof header);
    writeAll(file.get(), content, 0, path);
    for (auto& byte : bits) byte.store(0, std::memory_order_relaxed);
    count.store(0, std::memory_order_relaxed);
}

ReadinessBitmap ReadinessBitmap::open(const std::filesystem::path& path, std::string_view blob_id,
                                      uint32_t chunk_count, uint64_t blob_size, const rafs::Digest& fingerprint) {
    checkBlobId(blob_id);
    const ChunkMapHeader expected = makeHeader(blob_id, chunk_count, blob_size, fingerprint);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) rafs::failErrno(fmt::format("{}: open", path.string()));
    auto state = std::make_unique<State>(fd, bitmapBytes(chunk_count));
    // Two processes filling one blob's cache would each trust bits the other never wrote. The
    // lock is on the open file, so it goes with the process however it ends. A holder that is
    // letting go (the last user of a blob closing it on another thread as the blob is opened
    // again, a daemon in its last moments) gets a moment to finish.
    const auto outcome = rafs::lockExclusive(fd, std::chrono::steady_clock::now() + kLockWait, path.string());
    if (outcome == rafs::LockOutcome::TimedOut) {
        rafs::fail("{}: in use by another process: two rafsd daemons must not share a cache dir", path.string());
    }
    if (outcome == rafs::LockOutcome::Unsupported) {
        rafs::fail("{}: its file system cannot lock it (flock); the cache dir must be on one that can", path.string());
    }
    struct stat info {};
    if (::fstat(fd, &info) != 0) rafs::failErrno(fmt::format("{}: fstat", path.string()));
    std::string discard_reason;
    if (info.st_size != 0) {  // else we just created it
        discard_reason = state->load(path, expected);
        if (discard_reason.empty()) return ReadinessBitmap(path, chunk_count, std::move(state), {});
    }
    state->reset(path, expected);
    return ReadinessBitmap(path, chunk_count, std::move(state), std::move(discard_reason));
}

ReadinessBitmap::ReadinessBitmap(std::filesystem::path path, uint32_t chunk_count,
                                 std::unique_ptr<State> state, std::string discard_reason)
    : path_(std::move(path)),
      chunk_count_(chunk_count),
      state_(std::move(state)),
      discard_reason_(std::move(discard_reason)) {}

ReadinessBitmap::~ReadinessBitmap() = default;
ReadinessBitmap::ReadinessBitmap(ReadinessBitmap&&) noexcept = default;
ReadinessBitmap& ReadinessBitmap::operator=(ReadinessBitmap&&) noexcept = default;

void ReadinessBitmap::checkIndex(uint32_t chunk) const {
    if (chunk >= chunk_count_)
        rafs::fail("{}: chunk {} out of range ({} chunks)", path_.string(), chunk, chunk_count_);
}

void ReadinessBitmap::checkRange(uint32_t first, uint32_t count) const {
    if (uint64_t{first} + count > chunk_count_)
        rafs::fail("{}: chunks {} to {} out of range ({} chunks)", path_.string(), first, uint64_t{first} + count - 1,
                   chunk_count_);
}

bool ReadinessBitmap::test(uint32_t chunk) const {
    checkIndex(chunk);
    const auto mask = static_cast<uint8_t>(1u << (chunk % 8));
    return (state_->bits[chunk / 8].load(std::memory_order_acquire) & mask) != 0;
}

void ReadinessBitmap::setRange(uint32_t first, uint32_t count) {
    if (count == 0) return;
    checkRange(first, count);
    uint32_t added = 0;
    for (uint32_t chunk = first; chunk < first + count; ++chunk) {
        const auto mask = static_cast<uint8_t>(1u << (chunk % 8));
        if ((state_->bits[chunk / 8].fetch_or(mask, std::memory_order_acq_rel) & mask) == 0) ++added;
    }
    if (added == 0) return;
    state_->count.fetch_add(added, std::memory_order_relaxed);
    persist(first, count);
}

uint32_t ReadinessBitmap::clearRange(uint32_t first, uint32_t count) {
    if (count == 0) return 0;
    checkRange(first, count);
    uint32_t cleared = 0;
    for (uint32_t chunk = first; chunk < first + count; ++chunk) {
        const auto mask = static_cast<uint8_t>(1u << (chunk % 8));
        if ((state_->bits[chunk / 8].fetch_and(static_cast<uint8_t>(~mask), std::memory_order_acq_rel) & mask) != 0) {
            ++cleared;
        }
    }
    if (cleared == 0) return 0;
    state_->count.fetch_sub(cleared, std::memory_order_relaxed);
    persist(first, count);
    return cleared;
}

void ReadinessBitmap::persist(uint32_t first, uint32_t count) {
    // Another thread may change a neighbouring bit of the same byte concurrently. Each reads the
    // bytes only after taking the lock, which is after its own atomic update, so whichever writes
    // last writes both bits.
    std::lock_guard lock(state_->write_mutex);
    const uint32_t begin = first / 8;
    const uint32_t end = (first + count - 1) / 8 + 1;
    uint8_t small[64];
    std::vector<uint8_t> large;
    std::span<uint8_t> bytes(small, end - begin);
    if (end - begin > sizeof small) {
        large.resize(end - begin);
        bytes = large;
    }
    for (uint32_t i = begin; i < end; ++i) bytes[i - begin] = state_->bits[i].load(std::memory_order_relaxed);
    writeAll(state_->file.get(), bytes, kHeaderSize + begin, path_);
}

uint32_t ReadinessBitmap::count() const { return state_->count.load(std::memory_order_relaxed); }

uint32_t ReadinessBitmap::clearIf(const std::function<bool(uint32_t chunk)>& drop) {
    std::lock_guard lock(state_->write_mutex);
    uint32_t cleared = 0;
    for (uint32_t chunk = 0; chunk < chunk_count_; ++chunk) {
        std::atomic<uint8_t>& byte = state_->bits[chunk / 8];
        const auto mask = static_cast<uint8_t>(1u << (chunk % 8));
        if ((byte.load(std::memory_order_acquire) & mask) == 0 || !drop(chunk)) continue;
        if ((byte.fetch_and(static_cast<uint8_t>(~mask), std::memory_order_acq_rel) & mask) != 0) {
            state_->count.fetch_sub(1, std::memory_order_relaxed);
            ++cleared;
        }
    }
    if (cleared != 0) {
        std::vector<uint8_t> bytes(state_->bits.size());
        std::transform(state_->bits.begin(), state_->bits.end(), bytes.begin(),
                       [](const std::atomic<uint8_t>& b) { return b.load(std::memory_order_relaxed); });
        writeAll(state_->file.get(), bytes, kHeaderSize, path_);
    }
    return cleared;
}

void ReadinessBitmap::flush() {
    if (::fdatasync(state_->file.get()) != 0) rafs::failErrno(fmt::format("{}: fdatasync", path_.string()));
}

}  // namespace rafsd
