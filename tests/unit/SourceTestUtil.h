// Helpers of the source tests: a temporary directory and a ChunkSink that reads every file the
// way the chunk pipeline does and records what it got, without keeping gigabytes of holes.
#pragma once

#include "builder/writer/ChunkSink.h"
#include "tests/unit/TempDir.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace rafs::build::test {

using rafs::test::TempDir;

struct RecordedFile {
    const Inode* inode = nullptr;
    uint64_t bytes_read = 0;                     // holes skipped included
    uint64_t holes_skipped = 0;                  // bytes skipped as holes (FileData::skipHole)
    std::string content;                         // the whole content, for files up to 4 MiB
    std::map<uint64_t, std::string> non_zero;    // offset -> bytes, trimmed runs of each piece
};

class RecordingSink final : public ChunkSink {
public:
    static constexpr size_t kPiece = 1 << 20;
    static constexpr uint64_t kKeptContent = 4 << 20;

    // Runs before a file is read, so tests can change it under the reader.
    std::function<void(const Inode&)> before_read;
    std::vector<RecordedFile> files;  // in addFile order

    void addFile(Inode& inode, FileData& data) override {
        if (before_read) before_read(inode);
        RecordedFile file;
        file.inode = &inode;
        std::vector<uint8_t> piece(kPiece);
        for (uint64_t at = 0; at < inode.size; at += kPiece) {
            const auto n = static_cast<size_t>(std::min<uint64_t>(kPiece, inode.size - at));
            const std::span<uint8_t> out(piece.data(), n);
            if (data.skipHole(n)) {
                std::fill(out.begin(), out.end(), uint8_t{0});
                file.holes_skipped += n;
            } else {
                data.read(out);
            }
            file.bytes_read += n;
            if (inode.size <= kKeptContent) file.content.append(out.begin(), out.end());
            recordNonZero(file, at, out);
        }
        files.push_back(std::move(file));
    }

    const RecordedFile* find(const Inode& inode) const {
        for (const RecordedFile& f : files) {
            if (f.inode == &inode) return &f;
        }
        return nullptr;
    }

private:
    static void recordNonZero(RecordedFile& file, uint64_t at, std::span<const uint8_t> piece) {
        // All zero: the first byte is zero and every byte equals the next (memcmp is fast).
        if (piece[0] == 0 && std::memcmp(piece.data(), piece.data() + 1, piece.size() - 1) == 0) return;
        auto nz = [](uint8_t b) { return b != 0; };
        auto first = std::find_if(piece.begin(), piece.end(), nz);
        if (first == piece.end()) return;
        auto last = std::find_if(piece.rbegin(), piece.rend(), nz).base();
        file.non_zero[at + static_cast<uint64_t>(first - piece.begin())] = std::string(first, last);
    }
};

}  // namespace rafs::build::test
