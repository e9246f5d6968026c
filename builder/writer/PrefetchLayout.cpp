#include "builder/writer/PrefetchLayout.h"

namespace rafs::build {

namespace {

// The blob's chunks of `node`'s regular files (all of a directory's, depth first in name order),
// appended to `first` in file order.
void addChunks(const Node& node, uint32_t blob_index, std::vector<uint32_t>& first) {
    if (node.inode && node.inode->isReg()) {
        for (const ChunkRef& c : node.inode->chunks) {
            if (c.blob_index == blob_index) first.push_back(c.ci_index);
        }
    }
    for (const auto& [name, child] : node.children) addChunks(*child, blob_index, first);
}

}  // namespace

void placePrefetchFirst(const std::vector<std::string>& paths, FileTree& tree, ChunkDictionary& dictionary,
                        BlobWriter& blob) {
    std::vector<uint32_t> first;
    for (const std::string& path : paths) {
        if (const Node* node = tree.resolve(path)) addChunks(*node, blob.index(), first);
    }
    if (first.empty()) return;
    const std::vector<ChunkRef> moved = blob.placeFirst(first);
    tree.forEachInode([&](Inode& inode) {
        for (ChunkRef& c : inode.chunks) {
            if (c.blob_index == blob.index()) c = moved.at(c.ci_index);
        }
    });
    dictionary.relocate(blob.index(), moved);
}

}  // namespace rafs::build
