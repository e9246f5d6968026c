#include "builder/source/MemberTime.h"

#include "format/Error.h"

#include <archive.h>
#include <archive_entry.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>

namespace rafs::build {

namespace {

constexpr int64_t kNanosPerSecond = 1'000'000'000;

// A ustar header block: name, typeflag, size and the checksum filled in, the rest as tar has it.
void ustarHeader(uint8_t* block, std::string_view name, char typeflag, size_t size) {
    std::memcpy(block, name.data(), name.size());
    std::snprintf(reinterpret_cast<char*>(block + 100), 8, "%07o", 0644);
    std::snprintf(reinterpret_cast<char*>(block + 124), 12, "%011zo", size);
    std::snprintf(reinterpret_cast<char*>(block + 136), 12, "%011o", 0);
    block[156] = static_cast<uint8_t>(typeflag);
    std::memcpy(block + 257, "ustar\0" "00", 8);
    std::memset(block + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < 512; ++i) sum += block[i];
    std::snprintf(reinterpret_cast<char*>(block + 148), 8, "%06o", sum);
}

struct ReaderFree {
    void operator()(archive* a) const { archive_read_free(a); }
};

// Reads a pax archive of one member with "mtime=-1.25": true if libarchive gives -1 s + 0.25 s.
bool fractionSignLost() {
    constexpr std::string_view record = "15 mtime=-1.25\n";
    std::array<uint8_t, 512 * 5> tar{};
    ustarHeader(tar.data(), "PaxHeader", 'x', record.size());
    std::memcpy(tar.data() + 512, record.data(), record.size());
    ustarHeader(tar.data() + 1024, "probe", '0', 0);
    std::unique_ptr<archive, ReaderFree> a(archive_read_new());
    archive_entry* entry = nullptr;
    if (!a || archive_read_support_format_tar(a.get()) != ARCHIVE_OK ||
        archive_read_open_memory(a.get(), tar.data(), tar.size()) != ARCHIVE_OK ||
        archive_read_next_header(a.get(), &entry) < ARCHIVE_WARN) {
        return false;
    }
    return archive_entry_mtime(entry) == -1 && archive_entry_mtime_nsec(entry) == 250'000'000;
}

}  // namespace

MemberTime memberMtime(archive_entry* entry) {
    static const bool sign_lost = fractionSignLost();
    const int64_t sec = archive_entry_mtime(entry);
    const long nsec = archive_entry_mtime_nsec(entry);
    if (nsec < 0 || nsec >= kNanosPerSecond) fail("mtime nanoseconds {} out of range", nsec);
    if (sign_lost && sec < 0 && nsec > 0) return {sec - 1, static_cast<uint32_t>(kNanosPerSecond - nsec)};
    return {sec, static_cast<uint32_t>(nsec)};
}

}  // namespace rafs::build
