// Files that survive a crash whole: written, fsynced, then made visible by a rename whose directory
// is fsynced too, so that a reader finds the old content or the new, never part of it.
#pragma once

#include <filesystem>
#include <span>
#include <string_view>

namespace rafsd {

// Creates `path` (mode 0600, replacing an old one) holding `data`, and fsyncs it. Throws rafs::Error
// naming the file and the failed step.
void writeFileSynced(const std::filesystem::path& path, std::span<const uint8_t> data);
inline void writeFileSynced(const std::filesystem::path& path, std::string_view text) {
    writeFileSynced(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// As writeFileSynced, without the fsync: for copies checked whenever they are read, where a
// crash that tears one costs a fetch, never a wrong byte, and a sync on the mount path costs time.
void writeFileUnsynced(const std::filesystem::path& path, std::span<const uint8_t> data);
inline void writeFileUnsynced(const std::filesystem::path& path, std::string_view text) {
    writeFileUnsynced(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// Replaces `path` whole with `data`: written to <path>.tmp (removed again if that fails), fsynced,
// renamed over `path`, and the rename made durable. Creates the parent directory if needed.
void replaceFileSynced(const std::filesystem::path& path, std::span<const uint8_t> data);
inline void replaceFileSynced(const std::filesystem::path& path, std::string_view text) {
    replaceFileSynced(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// fsyncs the directory `dir`, making the renames and creations in it durable.
void syncDirectory(const std::filesystem::path& dir);

}  // namespace rafsd
