// Deduplication across every layer of one build: the first copy of a chunk is stored, later
// copies (same digest and length) refer to it.
#pragma once

#include "builder/tree/Inode.h"

#include <optional>
#include <unordered_map>
#include <vector>

namespace rafs::build {

class ChunkDictionary {
public:
    std::optional<ChunkRef> find(const Digest& digest, uint32_t uncompressed_size) const;
    void insert(const ChunkRef& ref);
    // Points the chunks of blob `blob_index` at their new places: moved[old ci index].
    void relocate(uint32_t blob_index, const std::vector<ChunkRef>& moved);
    size_t size() const { return chunks_.size(); }

private:
    struct KeyHash {
        size_t operator()(const Digest& d) const noexcept;
    };
    // Keyed by digest; the length is checked on lookup so a digest collision across lengths
    // can never alias two chunks.
    std::unordered_map<Digest, ChunkRef, KeyHash> chunks_;
};

}  // namespace rafs::build
