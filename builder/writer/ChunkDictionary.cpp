#include "builder/writer/ChunkDictionary.h"

#include <cstring>

namespace rafs::build {

size_t ChunkDictionary::KeyHash::operator()(const Digest& d) const noexcept {
    size_t h;
    std::memcpy(&h, d.data(), sizeof(h));  // digests are uniformly distributed already
    return h;
}

std::optional<ChunkRef> ChunkDictionary::find(const Digest& digest, uint32_t uncompressed_size) const {
    auto it = chunks_.find(digest);
    if (it == chunks_.end() || it->second.uncompressed_size != uncompressed_size) return std::nullopt;
    return it->second;
}

void ChunkDictionary::insert(const ChunkRef& ref) { chunks_.emplace(ref.digest, ref); }

void ChunkDictionary::relocate(uint32_t blob_index, const std::vector<ChunkRef>& moved) {
    for (auto& [digest, ref] : chunks_) {
        if (ref.blob_index == blob_index) ref = moved.at(ref.ci_index);
    }
}

}  // namespace rafs::build
