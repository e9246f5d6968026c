// How sources hand file contents to the chunk pipeline without knowing about blobs.
#pragma once

#include "builder/tree/Inode.h"

#include <cstdint>
#include <span>
#include <string>

namespace rafs::build {

// A regular file's content, read sequentially once.
class FileData {
public:
    virtual ~FileData() = default;
    // Fills `out` completely with the next bytes of the file, or throws Error naming the file
    // (unreadable, shorter than announced, corrupt archive). Holes may be produced as zeros.
    virtual void read(std::span<uint8_t> out) = 0;
    // If the next `length` bytes are known to be a hole without reading them, skips them and
    // returns true; otherwise skips nothing. Spares a sparse file's holes the zeroing and the
    // all-zero check, which cost in proportion to its apparent size.
    virtual bool skipHole(uint64_t /*length*/) { return false; }
    // The file as messages name it: its path, or the archive and member.
    virtual std::string name() const = 0;
};

// Receives each regular file of a layer, in source order. addFile reads inode.size bytes from
// `data` in chunk-size pieces and (possibly later, at the latest by the sink's finish) fills
// inode.chunks. The Inode must stay alive until then.
class ChunkSink {
public:
    virtual ~ChunkSink() = default;
    virtual void addFile(Inode& inode, FileData& data) = 0;
};

}  // namespace rafs::build
