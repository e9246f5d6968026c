// The tail sections of a Nydus blob (rafs-v6.md §3.4): each section's content is followed, not
// preceded, by a 512-byte GNU tar header, so a reader peels them off from the end of the file.
// The last section is usually the ToC ("rafs.blob.toc"), whose 128-byte entries locate the others
// with a sha256 of each one's uncompressed content.
#pragma once

#include "format/Digest.h"
#include "kernel-abi/rafs.h"

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rafs {

// The header exactly as Nydus (tar-rs Header::new_gnu) writes it: name, zero mode/uid/gid bytes,
// octal size (base-256 from 8 GiB on), mtime "00000000000", type '0', magic "ustar  \0", checksum.
// Throws Error if the name is empty or longer than 100 bytes.
TarHeader makeSectionHeader(std::string_view name, uint64_t size);

struct Section {
    std::string name;
    uint64_t offset;  // content is [offset, offset + size)
    uint64_t size;
};

// Peels sections from the end of a blob of `file_size` bytes and returns them in file order.
// Stops where the 512 bytes before the current position are not a GNU tar header (a blob
// without tar headers gives no sections; the caller decides whether an unpeeled prefix is
// acceptable). Throws Error for a header with a bad checksum, type or size, or a section that
// would start before offset 0. readAt(offset, buffer) reads exactly buffer.size() bytes or throws.
std::vector<Section> peelSections(const std::function<void(uint64_t, std::span<uint8_t>)>& readAt,
                                  uint64_t file_size);

// Throws Error if the name is empty or longer than 16 bytes, or flags is not one of kTocNone,
// kTocZstd, kTocLz4Block.
TocEntry makeTocEntry(std::string_view name, uint32_t flags, const Digest& sha256_of_content,
                      uint64_t offset, uint64_t compressed_size, uint64_t uncompressed_size);

// Parses the content of a "rafs.blob.toc" section (without its tar header). Throws Error unless
// it is 128..65024 bytes, a multiple of 128, and every entry has a name and exactly one known
// compression flag. Reserved bytes are not checked: 2.2-era Nydus leaves garbage in them.
std::vector<TocEntry> parseToc(std::span<const uint8_t> raw);

// The entry's name: its 16-byte field up to the first NUL.
std::string tocEntryName(const TocEntry& entry);

}  // namespace rafs
