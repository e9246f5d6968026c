#include "daemon/snapshotter/SnapshotStore.h"

#include "daemon/core/DurableFile.h"
#include "format/Error.h"

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace rafsd {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kVersion = 1;

const char* backingName(Backing b) {
    switch (b) {
    case Backing::Directory: return "directory";
    case Backing::RafsBlob: return "rafs-blob";
    case Backing::RafsImage: return "rafs-image";
    }
    return "?";
}

Backing parseBacking(const std::string& name, const fs::path& file) {
    if (name == "directory") return Backing::Directory;
    if (name == "rafs-blob") return Backing::RafsBlob;
    if (name == "rafs-image") return Backing::RafsImage;
    rafs::fail("{}: unknown backing '{}'", file.string(), name);
}

SnapshotKind parseKind(const std::string& name, const fs::path& file) {
    if (name == "view") return SnapshotKind::View;
    if (name == "active") return SnapshotKind::Active;
    if (name == "committed") return SnapshotKind::Committed;
    rafs::fail("{}: unknown kind '{}'", file.string(), name);
}

}  // namespace

std::string kindName(SnapshotKind kind) {
    switch (kind) {
    case SnapshotKind::View: return "view";
    case SnapshotKind::Active: return "active";
    case SnapshotKind::Committed: return "committed";
    }
    return "?";
}

int64_t nowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

SnapshotStore::SnapshotStore(fs::path root) : root_(std::move(root)) {
    const fs::path file = root_ / "snapshots.json";
    std::ifstream in(file);
    if (!in) {
        if (fs::exists(file)) rafs::fail("cannot read {}", file.string());
        return;
    }
    std::stringstream text;
    text << in.rdbuf();
    try {
        const json j = json::parse(text.str());
        if (j.at("version").get<int>() != kVersion) {
            rafs::fail("{}: table version {}, this rafs-snapshotter reads {}", file.string(), j.at("version").dump(),
                       kVersion);
        }
        next_id_ = j.at("next_id").get<uint64_t>();
        for (const auto& [key, v] : j.at("snapshots").items()) {
            Snapshot s;
            s.id = v.at("id").get<uint64_t>();
            if (s.id >= next_id_) rafs::fail("{}: snapshot {} has id {} beyond next_id", file.string(), key, s.id);
            s.kind = parseKind(v.at("kind").get<std::string>(), file);
            s.parent = v.at("parent").get<std::string>();
            s.labels = v.at("labels").get<std::map<std::string, std::string>>();
            s.created_ns = v.at("created").get<int64_t>();
            s.updated_ns = v.at("updated").get<int64_t>();
            s.backing = parseBacking(v.at("backing").get<std::string>(), file);
            s.image = v.value("image", std::string());
            if (s.backing == Backing::RafsImage && s.image.empty()) rafs::fail("{}: snapshot {} names no image", file.string(), key);
            snapshots_.emplace(key, std::move(s));
        }
    } catch (const json::exception& e) {
        rafs::fail("{}: {}", file.string(), e.what());
    }
    for (const auto& [key, s] : snapshots_) {
        if (!s.parent.empty() && !snapshots_.contains(s.parent)) {
            rafs::fail("{}: snapshot {} has parent {} which is not in the table", file.string(), key, s.parent);
        }
    }
}

fs::path SnapshotStore::directory(uint64_t id) const { return root_ / "snapshots" / std::to_string(id); }
fs::path SnapshotStore::workDir(uint64_t id) const { return directory(id) / "work"; }
fs::path SnapshotStore::mountDir(uint64_t id) const { return root_ / "mnt" / std::to_string(id); }
fs::path SnapshotStore::fsDir(const Snapshot& s) const {
    return s.backing == Backing::RafsImage ? mountDir(s.id) : directory(s.id) / "fs";
}

uint64_t SnapshotStore::allocateId() {
    std::lock_guard lock(mutex_);
    save(snapshots_, next_id_ + 1);
    return next_id_++;
}

std::optional<Snapshot> SnapshotStore::find(const std::string& key) const {
    std::lock_guard lock(mutex_);
    auto it = snapshots_.find(key);
    if (it == snapshots_.end()) return std::nullopt;
    return it->second;
}

std::vector<std::pair<std::string, Snapshot>> SnapshotStore::chain(const std::string& key) const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<std::string, Snapshot>> out;
    std::string next = key;
    while (!next.empty()) {
        auto it = snapshots_.find(next);
        if (it == snapshots_.end()) rafs::fail("snapshot {} does not exist", next);
        if (out.size() > snapshots_.size()) rafs::fail("snapshot {}: its parents form a loop", key);
        out.emplace_back(it->first, it->second);
        next = it->second.parent;
    }
    return out;
}

bool SnapshotStore::hasChildren(const std::string& key) const {
    std::lock_guard lock(mutex_);
    for (const auto& [k, s] : snapshots_) {
        if (s.parent == key) return true;
    }
    return false;
}

std::map<std::string, Snapshot> SnapshotStore::all() const {
    std::lock_guard lock(mutex_);
    return snapshots_;
}

void SnapshotStore::put(const std::string& key, const Snapshot& snapshot) {
    change([&](std::map<std::string, Snapshot>& t) { t[key] = snapshot; });
}

void SnapshotStore::rename(const std::string& from, const std::string& to, const Snapshot& snapshot) {
    change([&](std::map<std::string, Snapshot>& t) {
        t.erase(from);
        t[to] = snapshot;
    });
}

void SnapshotStore::erase(const std::string& key) {
    change([&](std::map<std::string, Snapshot>& t) { t.erase(key); });
}

// Made to a copy, saved, and only then kept: a failed save (a full disk) leaves the table as the
// file has it, so what callers see never differs from what a restart reads.
void SnapshotStore::change(const std::function<void(std::map<std::string, Snapshot>&)>& edit) {
    std::lock_guard lock(mutex_);
    std::map<std::string, Snapshot> changed = snapshots_;
    edit(changed);
    save(changed, next_id_);
    snapshots_ = std::move(changed);
}

void SnapshotStore::save(const std::map<std::string, Snapshot>& snapshots, uint64_t next_id) const {
    json list = json::object();
    for (const auto& [key, s] : snapshots) {
        json v = {{"id", s.id},           {"kind", kindName(s.kind)}, {"parent", s.parent},
                  {"labels", s.labels},   {"created", s.created_ns},  {"updated", s.updated_ns},
                  {"backing", backingName(s.backing)}};
        if (!s.image.empty()) v["image"] = s.image;
        list[key] = std::move(v);
    }
    replaceFileSynced(root_ / "snapshots.json",
                      json{{"version", kVersion}, {"next_id", next_id}, {"snapshots", list}}.dump(2) + "\n");
}

}  // namespace rafsd
