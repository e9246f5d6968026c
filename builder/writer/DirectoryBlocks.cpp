#include "builder/writer/DirectoryBlocks.h"

#include "format/Error.h"
#include "kernel-abi/erofs.h"

#include <algorithm>
#include <cstring>

namespace rafs::build {

DirectoryBlocks::DirectoryBlocks(std::vector<DirectoryEntry> entries) : entries_(std::move(entries)) {
    std::sort(entries_.begin(), entries_.end(),
              [](const DirectoryEntry& a, const DirectoryEntry& b) { return a.name < b.name; });
    size_t used = erofs::kBlockSize;  // forces a first block
    uint64_t full_blocks = 0;
    for (size_t i = 0; i < entries_.size(); ++i) {
        const std::string& name = entries_[i].name;
        if (name.empty() || name.size() > erofs::kNameLen) fail("bad directory entry name '{}'", name);
        size_t need = sizeof(erofs::Dirent) + name.size();
        if (used + need > erofs::kBlockSize) {
            if (!block_starts_.empty()) ++full_blocks;
            block_starts_.push_back(i);
            used = 0;
        }
        used += need;
    }
    size_ = full_blocks * erofs::kBlockSize + used;
}

std::vector<uint8_t> DirectoryBlocks::encode() const {
    std::vector<uint8_t> out(static_cast<size_t>(size_), 0);
    for (size_t b = 0; b < block_starts_.size(); ++b) {
        const size_t first = block_starts_[b];
        const size_t end = b + 1 < block_starts_.size() ? block_starts_[b + 1] : entries_.size();
        uint8_t* block = out.data() + b * erofs::kBlockSize;
        size_t nameoff = (end - first) * sizeof(erofs::Dirent);
        for (size_t i = first; i < end; ++i) {
            const DirectoryEntry& e = entries_[i];
            erofs::Dirent d{e.nid, static_cast<uint16_t>(nameoff), e.file_type, 0};
            std::memcpy(block + (i - first) * sizeof(d), &d, sizeof(d));
            std::memcpy(block + nameoff, e.name.data(), e.name.size());
            nameoff += e.name.size();
        }
    }
    return out;
}

}  // namespace rafs::build
