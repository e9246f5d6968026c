#include "format/BlobSections.h"

#include "format/ByteView.h"
#include "format/Error.h"

#include <algorithm>
#include <cstring>
#include <optional>

namespace rafs {

namespace {

constexpr char kGnuMagic[8] = {'u', 's', 't', 'a', 'r', ' ', ' ', '\0'};
constexpr uint64_t kMaxOctalSize = 077777777777ULL;  // 11 octal digits
constexpr size_t kTocMaxBytes = 0x10000 - sizeof(TarHeader);

// Writes `value` as zero-padded octal digits filling all but the field's last byte, which stays
// NUL (tar-rs octal_into).
template <size_t N>
void putOctal(char (&field)[N], uint64_t value) {
    for (size_t i = N - 1; i-- > 0;) {
        field[i] = static_cast<char>('0' + (value & 7));
        value >>= 3;
    }
}

// Sum of all header bytes with the checksum field counted as spaces.
uint32_t headerChecksum(const TarHeader& h) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(&h);
    uint32_t sum = 0;
    for (size_t i = 0; i < sizeof(TarHeader); ++i) {
        bool in_chksum = i >= offsetof(TarHeader, chksum) && i < offsetof(TarHeader, typeflag);
        sum += in_chksum ? uint32_t{' '} : bytes[i];
    }
    return sum;
}

// Parses an octal field (leading spaces, digits, then NUL or space padding), or a GNU base-256
// field (top bit of the first byte set). nullopt if malformed.
template <size_t N>
std::optional<uint64_t> parseNumber(const char (&field)[N]) {
    const auto* f = reinterpret_cast<const uint8_t*>(field);
    if (f[0] & 0x80) {
        uint64_t v = f[0] & 0x7f;
        for (size_t i = 1; i < N; ++i) {
            if (v >> 56) return std::nullopt;
            v = v << 8 | f[i];
        }
        return v;
    }
    size_t i = 0;
    while (i < N && f[i] == ' ') ++i;
    size_t digits = 0;
    uint64_t v = 0;
    for (; i < N && f[i] >= '0' && f[i] <= '7'; ++i, ++digits) {
        if (v >> 61) return std::nullopt;
        v = v << 3 | static_cast<uint64_t>(f[i] - '0');
    }
    if (digits == 0) return std::nullopt;
    for (; i < N; ++i) {
        if (f[i] != '\0' && f[i] != ' ') return std::nullopt;
    }
    return v;
}

}  // namespace

TarHeader makeSectionHeader(std::string_view name, uint64_t size) {
    TarHeader h{};
    if (name.empty() || name.size() > sizeof(h.name)) {
        fail("tar section name '{}' must be 1..{} bytes", name, sizeof(h.name));
    }
    std::memcpy(h.name, name.data(), name.size());
    if (size <= kMaxOctalSize) {
        putOctal(h.size, size);
    } else {
        // GNU base-256: the top bit flags binary, the value is big-endian in the last 8 bytes.
        for (size_t i = 0; i < 8; ++i) {
            h.size[sizeof(h.size) - 1 - i] = static_cast<char>((size >> (8 * i)) & 0xff);
        }
        h.size[0] = static_cast<char>(0x80);
    }
    putOctal(h.mtime, 0);
    h.typeflag = '0';
    std::memcpy(h.magic, kGnuMagic, sizeof(h.magic));
    putOctal(h.chksum, headerChecksum(h));
    return h;
}

std::vector<Section> peelSections(const std::function<void(uint64_t, std::span<uint8_t>)>& readAt,
                                  uint64_t file_size) {
    std::vector<Section> sections;
    uint64_t end = file_size;
    // Each step moves `end` back by at least a header, so this terminates.
    while (end >= sizeof(TarHeader)) {
        const uint64_t header_offset = end - sizeof(TarHeader);
        TarHeader h;
        readAt(header_offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&h), sizeof(h)));
        if (std::memcmp(h.magic, kGnuMagic, sizeof(kGnuMagic)) != 0) break;
        std::optional<uint64_t> stored = parseNumber(h.chksum);
        if (!stored || *stored != headerChecksum(h)) {
            fail("tar header at offset {}: bad checksum", header_offset);
        }
        if (h.typeflag != '0' && h.typeflag != '\0') {
            fail("tar header at offset {}: type '{}' is not a regular file", header_offset, h.typeflag);
        }
        std::optional<uint64_t> size = parseNumber(h.size);
        if (!size) fail("tar header at offset {}: malformed size field", header_offset);
        std::string name(h.name, strnlen(h.name, sizeof(h.name)));
        if (*size > header_offset) {
            fail("tar section '{}' of {} bytes ending at offset {} starts before the blob", name,
                 *size, header_offset);
        }
        sections.push_back(Section{std::move(name), header_offset - *size, *size});
        end = header_offset - *size;
    }
    std::reverse(sections.begin(), sections.end());
    return sections;
}

TocEntry makeTocEntry(std::string_view name, uint32_t flags, const Digest& sha256_of_content,
                      uint64_t offset, uint64_t compressed_size, uint64_t uncompressed_size) {
    TocEntry e{};
    if (name.empty() || name.size() > sizeof(e.name)) {
        fail("ToC entry name '{}' must be 1..{} bytes", name, sizeof(e.name));
    }
    if (flags != kTocNone && flags != kTocZstd && flags != kTocLz4Block) {
        fail("ToC entry '{}': invalid flags {:#x}", name, flags);
    }
    e.flags = flags;
    std::memcpy(e.name, name.data(), name.size());
    std::memcpy(e.uncompressed_digest, sha256_of_content.data(), sizeof(e.uncompressed_digest));
    e.compressed_offset = offset;
    e.compressed_size = compressed_size;
    e.uncompressed_size = uncompressed_size;
    return e;
}

std::vector<TocEntry> parseToc(std::span<const uint8_t> raw) {
    if (raw.empty() || raw.size() % sizeof(TocEntry) != 0 || raw.size() > kTocMaxBytes) {
        fail("blob ToC of {} bytes: expected a multiple of {} up to {}", raw.size(),
             sizeof(TocEntry), kTocMaxBytes);
    }
    std::vector<TocEntry> entries;
    for (size_t off = 0; off < raw.size(); off += sizeof(TocEntry)) {
        TocEntry e = loadAt<TocEntry>(raw, off);
        const size_t index = off / sizeof(TocEntry);
        if (e.name[0] == 0) fail("blob ToC entry {} has no name", index);
        if (e.flags != kTocNone && e.flags != kTocZstd && e.flags != kTocLz4Block) {
            fail("blob ToC entry {} ('{}'): invalid flags {:#x}", index, tocEntryName(e), e.flags);
        }
        entries.push_back(e);
    }
    return entries;
}

std::string tocEntryName(const TocEntry& entry) {
    const char* name = reinterpret_cast<const char*>(entry.name);
    return std::string(name, strnlen(name, sizeof(entry.name)));
}

}  // namespace rafs
