// Directory contents in EROFS form: entries (".", ".." and children) sorted bytewise across the
// whole directory, packed into 4 KiB blocks of dirents followed by names, no entry or name
// crossing a block.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rafs::build {

struct DirectoryEntry {
    std::string name;
    uint64_t nid = 0;
    uint8_t file_type = 0;
};

class DirectoryBlocks {
public:
    // Sorts `entries` and plans the blocks; nids may still be unset.
    explicit DirectoryBlocks(std::vector<DirectoryEntry> entries);

    // i_size: full blocks plus the used bytes of the last one.
    uint64_t size() const { return size_; }
    std::vector<DirectoryEntry>& entries() { return entries_; }
    // The directory's bytes (size() of them), from the entries' current nids.
    std::vector<uint8_t> encode() const;

private:
    std::vector<DirectoryEntry> entries_;
    std::vector<size_t> block_starts_;  // index of each block's first entry
    uint64_t size_ = 0;
};

}  // namespace rafs::build
