// What rafs-snapshotter knows about its snapshots, kept on disk so that a crash of the snapshotter,
// of containerd or of rafsd, or a reboot, finds every snapshot as it was last answered:
//   <root>/snapshots.json      the whole table, replaced atomically (written, fsynced, renamed)
//   <root>/snapshots/<id>/fs   an ordinary snapshot's directory (overlay upperdir), and ...
//   <root>/snapshots/<id>/work ... its overlay workdir
//   <root>/mnt/<id>            where rafsd mounts a RAFS image (a bootstrap layer's snapshot)
// A snapshot's record is written before its directories are used and removed before they are
// deleted, so what a crash leaves behind is a directory nobody owns, which Cleanup (and start)
// removes; never a record whose directory is gone.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace rafsd {

enum class SnapshotKind { View, Active, Committed };

// How a snapshot's tree is made.
enum class Backing {
    Directory,  // its own directory (snapshots/<id>/fs), as in containerd's overlayfs snapshotter
    RafsBlob,   // a Nydus data-blob layer: empty, the bootstrap layer's mount holds its files
    RafsImage,  // a Nydus bootstrap layer: the whole image, mounted by rafsd at mnt/<id>
};

struct Snapshot {
    uint64_t id = 0;
    SnapshotKind kind = SnapshotKind::Active;
    std::string parent;  // key of the parent, "" for none
    std::map<std::string, std::string> labels;
    int64_t created_ns = 0;  // Unix time in nanoseconds
    int64_t updated_ns = 0;
    Backing backing = Backing::Directory;
    std::string image;  // RafsImage: HOST/REPO@sha256:<manifest digest>, what rafsd mounts
};

class SnapshotStore {
public:
    // Loads <root>/snapshots.json if it exists; throws rafs::Error naming the file if it is damaged.
    explicit SnapshotStore(std::filesystem::path root);

    const std::filesystem::path& root() const { return root_; }
    std::filesystem::path directory(uint64_t id) const;  // snapshots/<id>
    std::filesystem::path fsDir(const Snapshot& s) const;  // where its tree is: fs or mnt/<id>
    std::filesystem::path workDir(uint64_t id) const;
    std::filesystem::path mountDir(uint64_t id) const;

    // A fresh id, recorded on disk before it is returned so no crash hands it out twice.
    uint64_t allocateId();
    std::optional<Snapshot> find(const std::string& key) const;
    // The snapshot and its ancestors, nearest first; throws rafs::Error if a parent is missing.
    std::vector<std::pair<std::string, Snapshot>> chain(const std::string& key) const;
    bool hasChildren(const std::string& key) const;
    std::map<std::string, Snapshot> all() const;

    // Each writes the table before it returns.
    void put(const std::string& key, const Snapshot& snapshot);
    void rename(const std::string& from, const std::string& to, const Snapshot& snapshot);
    void erase(const std::string& key);

private:
    // Applies `edit` to a copy of the table, saves it, then keeps it.
    void change(const std::function<void(std::map<std::string, Snapshot>&)>& edit);
    // Writes `snapshots` and `next_id` as the table; with mutex_ held.
    void save(const std::map<std::string, Snapshot>& snapshots, uint64_t next_id) const;

    std::filesystem::path root_;
    mutable std::mutex mutex_;
    uint64_t next_id_ = 1;
    std::map<std::string, Snapshot> snapshots_;
};

std::string kindName(SnapshotKind kind);
int64_t nowNs();

}  // namespace rafsd
