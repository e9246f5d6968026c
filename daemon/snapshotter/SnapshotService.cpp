#include "daemon/snapshotter/SnapshotService.h"

#include "daemon/api/MountInfo.h"
#include "daemon/core/Log.h"
#include "daemon/snapshotter/OverlayMounts.h"
#include "daemon/snapshotter/SnapshotFilter.h"
#include "format/Error.h"

#include <sys/stat.h>

#include <functional>
#include <set>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

// An answer other than OK, with the gRPC code containerd maps to its errdefs (NOT_FOUND,
// ALREADY_EXISTS, FAILED_PRECONDITION, ...).
struct StatusError {
    grpc::StatusCode code;
    std::string message;
};

template <typename... Args>
[[noreturn]] void failWith(grpc::StatusCode code, fmt::format_string<Args...> format, Args&&... args) {
    throw StatusError{code, fmt::format(format, std::forward<Args>(args)...)};
}

grpc::Status answer(const char* what, const std::string& key, const std::function<void()>& body) {
    try {
        body();
        log::debug("{} {}: ok", what, key);
        return grpc::Status::OK;
    } catch (const StatusError& e) {
        if (e.code == grpc::StatusCode::ALREADY_EXISTS || e.code == grpc::StatusCode::NOT_FOUND) {
            log::debug("{} {}: {}", what, key, e.message);
        } else {
            log::warn("{} {}: {}", what, key, e.message);
        }
        return {e.code, e.message};
    } catch (const std::exception& e) {
        log::error("{} {}: {}", what, key, e.what());
        return {grpc::StatusCode::UNKNOWN, e.what()};
    }
}

std::map<std::string, std::string> labelsOf(const google::protobuf::Map<std::string, std::string>& labels) {
    return {labels.begin(), labels.end()};
}

void setTime(google::protobuf::Timestamp* t, int64_t ns) {
    t->set_seconds(ns / 1'000'000'000);
    t->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
}

void fillInfo(snapshots_api::Info* info, const std::string& key, const Snapshot& s) {
    info->set_name(key);
    info->set_parent(s.parent);
    switch (s.kind) {
    case SnapshotKind::View: info->set_kind(snapshots_api::VIEW); break;
    case SnapshotKind::Active: info->set_kind(snapshots_api::ACTIVE); break;
    case SnapshotKind::Committed: info->set_kind(snapshots_api::COMMITTED); break;
    }
    setTime(info->mutable_created_at(), s.created_ns);
    setTime(info->mutable_updated_at(), s.updated_ns);
    info->mutable_labels()->insert(s.labels.begin(), s.labels.end());
}

Snapshot existing(const SnapshotStore& store, const std::string& key) {
    if (key.empty()) failWith(grpc::StatusCode::INVALID_ARGUMENT, "no snapshot key given");
    auto s = store.find(key);
    if (!s) failWith(grpc::StatusCode::NOT_FOUND, "snapshot {} does not exist", key);
    return *s;
}

// Runs `work` with `lock` let go, then takes it again and runs `settle` under it, whether `work`
// returned or threw.
template <typename Work, typename Settle>
void unlockedWhile(std::unique_lock<std::mutex>& lock, Work&& work, Settle&& settle) {
    lock.unlock();
    try {
        work();
    } catch (...) {
        lock.lock();
        settle();
        throw;
    }
    lock.lock();
    settle();
}

void makeDirectory(const fs::path& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) rafs::fail("cannot create {}: {}", dir.string(), ec.message());
}

// Blocks and inodes of the tree at `dir`, each inode counted once (containerd fs.DiskUsage).
std::pair<int64_t, int64_t> diskUsage(const fs::path& dir) {
    std::set<std::pair<dev_t, ino_t>> seen;
    int64_t bytes = 0;
    const auto add = [&](const fs::path& p) {
        struct stat st {};
        if (::lstat(p.c_str(), &st) != 0) rafs::failErrno("lstat " + p.string());
        if (seen.emplace(st.st_dev, st.st_ino).second) bytes += static_cast<int64_t>(st.st_blocks) * 512;
    };
    std::error_code ec;
    if (!fs::exists(dir, ec)) return {0, 0};
    add(dir);
    for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) add(it->path());
    if (ec) rafs::fail("cannot walk {}: {}", dir.string(), ec.message());
    return {bytes, static_cast<int64_t>(seen.size())};
}

}  // namespace

void SnapshotService::create(const std::string& key, const std::string& parent, const Labels& labels,
                             SnapshotKind kind, MountList* mounts) {
    if (key.empty()) failWith(grpc::StatusCode::INVALID_ARGUMENT, "no snapshot key given");
    // Before the lock: it may ask the registry for the image's manifest, and no other call need
    // wait for that.
    const RemoteLayer layer = kind == SnapshotKind::Active ? remote_.classify(labels) : RemoteLayer{};
    std::unique_lock lock(mutex_);
    if (layer.role != RemoteLayer::Role::None) {
        // Another Prepare of the same layer (two pulls of one image) is mounting it: its outcome
        // is this one's.
        const std::string& target = labels.at(label::kSnapshotRef);
        settled_.wait(lock, [&] { return !committing_.contains(target); });
    }
    if (store_.find(key)) failWith(grpc::StatusCode::ALREADY_EXISTS, "snapshot {} already exists", key);
    if (!parent.empty()) {
        auto p = store_.find(parent);
        if (!p) failWith(grpc::StatusCode::NOT_FOUND, "parent snapshot {} does not exist", parent);
        if (p->kind != SnapshotKind::Committed) {
            failWith(grpc::StatusCode::INVALID_ARGUMENT, "parent snapshot {} is not committed", parent);
        }
    }
    if (layer.role != RemoteLayer::Role::None) createRemote(lock, parent, labels, layer);
    Snapshot s;
    s.id = store_.allocateId();
    s.kind = kind;
    s.parent = parent;
    s.labels = labels;
    s.created_ns = s.updated_ns = nowNs();
    makeDirectory(store_.fsDir(s));
    if (kind == SnapshotKind::Active) makeDirectory(store_.workDir(s.id));
    store_.put(key, s);
    try {
        ensureImages(lock, key);
        mountsOf(key, mounts);
    } catch (...) {
        // containerd records no snapshot whose Prepare failed: neither may we (a parent's image
        // that cannot be mounted now, with rafsd down). Unless a Remove took it meanwhile.
        if (const auto now = store_.find(key); now && now->id == s.id) {
            store_.erase(key);
            releaseFilesOrLog(s, key);
        }
        throw;
    }
}

void SnapshotService::createRemote(std::unique_lock<std::mutex>& lock, const std::string& parent, const Labels& labels,
                                   const RemoteLayer& layer) {
    const std::string target = labels.at(label::kSnapshotRef);
    if (store_.find(target)) failWith(grpc::StatusCode::ALREADY_EXISTS, "snapshot {} already exists", target);
    Snapshot s;
    s.id = store_.allocateId();
    s.kind = SnapshotKind::Committed;
    s.parent = parent;
    s.labels = labels;
    s.created_ns = s.updated_ns = nowNs();
    if (layer.role == RemoteLayer::Role::Bootstrap) {
        s.backing = Backing::RafsImage;
        s.image = layer.image;
        const fs::path dir = store_.mountDir(s.id);
        // rafsd fetches the bootstrap from the registry meanwhile: without the lock, the target
        // reserved.
        committing_.emplace(target, s.id);
        try {
            unlockedWhile(lock, [&] { mounts_.ensure(s.image, dir); }, [&] {
                committing_.erase(target);
                settled_.notify_all();
            });
        } catch (...) {
            std::error_code ec;
            fs::remove(dir, ec);
            throw;
        }
        try {
            if (!parent.empty() && !store_.find(parent)) {
                failWith(grpc::StatusCode::NOT_FOUND, "parent snapshot {} was removed meanwhile", parent);
            }
            // An ordinary Prepare and Commit of the same chain ID may have made it meanwhile.
            if (store_.find(target)) failWith(grpc::StatusCode::ALREADY_EXISTS, "snapshot {} already exists", target);
            store_.put(target, s);
        } catch (...) {
            releaseFilesOrLog(s, target);
            throw;
        }
    } else {
        s.backing = Backing::RafsBlob;
        store_.put(target, s);
    }
    log::info("committed {} ({}) as a remote snapshot{}", target,
              layer.role == RemoteLayer::Role::Bootstrap ? "bootstrap layer" : "data-blob layer",
              s.image.empty() ? "" : " of " + s.image);
    failWith(grpc::StatusCode::ALREADY_EXISTS, "snapshot {} already exists (a remote snapshot)", target);
}

void SnapshotService::mountsOf(const std::string& key, MountList* mounts) {
    const auto chain = store_.chain(key);
    const Snapshot& s = chain.front().second;
    if (s.kind == SnapshotKind::Committed) {
        failWith(grpc::StatusCode::FAILED_PRECONDITION, "snapshot {} is committed: it has no mounts", key);
    }
    std::vector<fs::path> lowers;
    for (size_t i = 1; i < chain.size(); ++i) {
        const Snapshot& p = chain[i].second;
        if (p.backing == Backing::RafsBlob) continue;
        lowers.push_back(store_.fsDir(p));
    }
    for (const MountSpec& m : snapshotMounts(s.kind, store_.fsDir(s), store_.workDir(s.id), lowers)) {
        auto* out = mounts->Add();
        out->set_type(m.type);
        out->set_source(m.source);
        for (const std::string& o : m.options) out->add_options(o);
    }
}

void SnapshotService::ensureImages(std::unique_lock<std::mutex>& lock, const std::string& key) {
    std::vector<std::string> images;
    for (const auto& [name, p] : store_.chain(key)) {
        if (p.backing == Backing::RafsImage) images.push_back(name);
    }
    for (const std::string& name : images) ensureImage(lock, name);
    // A Remove of `key` may have come meanwhile.
    existing(store_, key);
}

void SnapshotService::ensureImage(std::unique_lock<std::mutex>& lock, const std::string& key) {
    std::optional<Snapshot> s;
    settled_.wait(lock, [&] {
        s = store_.find(key);
        return !s || !ensuring_.contains(s->id);
    });
    // Removed (or made again as another kind) while another call mounted it.
    if (!s || s->backing != Backing::RafsImage) failWith(grpc::StatusCode::NOT_FOUND, "snapshot {} was removed meanwhile", key);
    const uint64_t id = s->id;
    ensuring_.insert(id);
    unlockedWhile(lock, [&] { mounts_.ensure(s->image, store_.mountDir(id)); }, [&] {
        ensuring_.erase(id);
        settled_.notify_all();
    });
}

void SnapshotService::releaseFiles(const Snapshot& s) {
    std::error_code ec;
    if (s.backing == Backing::RafsImage) {
        const fs::path dir = store_.mountDir(s.id);
        mounts_.release(dir);
        fs::remove(dir, ec);
    } else {
        fs::remove_all(store_.directory(s.id), ec);
    }
    if (ec) rafs::fail("cannot remove the files of snapshot {}: {}", s.id, ec.message());
}

void SnapshotService::releaseFilesOrLog(const Snapshot& s, const std::string& key) {
    try {
        releaseFiles(s);
    } catch (const std::exception& e) {
        log::warn("{}: {} (Cleanup tries again)", key, e.what());
    }
}

void SnapshotService::removeOrphans() {
    std::set<std::string> owned;
    for (const auto& [key, s] : store_.all()) owned.insert(std::to_string(s.id));
    // Remote commits under way: their mount directory is in use before their record exists.
    for (const auto& [target, id] : committing_) owned.insert(std::to_string(id));
    std::error_code ec;
    for (const char* area : {"snapshots", "mnt"}) {
        const fs::path dir = store_.root() / area;
        if (!fs::exists(dir, ec)) continue;
        for (const auto& entry : fs::directory_iterator(dir)) {
            if (owned.contains(entry.path().filename().string())) continue;
            try {
                if (std::string(area) == "mnt") {
                    if (erofsMountOn(entry.path())) mounts_.release(entry.path());
                    fs::remove(entry.path());
                } else {
                    fs::remove_all(entry.path());
                }
                log::info("removed leftover {}", entry.path().string());
            } catch (const std::exception& e) {
                log::warn("cannot remove leftover {}: {}", entry.path().string(), e.what());
            }
        }
    }
}

void SnapshotService::removeLeftovers() {
    std::lock_guard lock(mutex_);
    removeOrphans();
}

void SnapshotService::remountImages(const std::atomic<bool>& stop) {
    for (const auto& [key, s] : store_.all()) {
        if (stop.load()) return;
        if (s.backing != Backing::RafsImage) continue;
        std::unique_lock lock(mutex_);
        const std::optional<Snapshot> now = store_.find(key);  // removed, or made again, meanwhile
        if (!now || now->backing != Backing::RafsImage) continue;
        try {
            ensureImage(lock, key);
        } catch (const std::exception& e) {
            log::warn("snapshot {}: cannot mount {} now ({}); Mounts tries again", key, s.image, e.what());
        }
    }
}

grpc::Status SnapshotService::Prepare(grpc::ServerContext*, const snapshots_api::PrepareSnapshotRequest* request,
                                      snapshots_api::PrepareSnapshotResponse* response) {
    return answer("prepare", request->key(), [&] {
        create(request->key(), request->parent(), labelsOf(request->labels()), SnapshotKind::Active,
               response->mutable_mounts());
    });
}

grpc::Status SnapshotService::View(grpc::ServerContext*, const snapshots_api::ViewSnapshotRequest* request,
                                   snapshots_api::ViewSnapshotResponse* response) {
    return answer("view", request->key(), [&] {
        create(request->key(), request->parent(), labelsOf(request->labels()), SnapshotKind::View,
               response->mutable_mounts());
    });
}

grpc::Status SnapshotService::Mounts(grpc::ServerContext*, const snapshots_api::MountsRequest* request,
                                     snapshots_api::MountsResponse* response) {
    return answer("mounts", request->key(), [&] {
        std::unique_lock lock(mutex_);
        existing(store_, request->key());
        ensureImages(lock, request->key());
        mountsOf(request->key(), response->mutable_mounts());
    });
}

grpc::Status SnapshotService::Commit(grpc::ServerContext*, const snapshots_api::CommitSnapshotRequest* request,
                                     google::protobuf::Empty*) {
    return answer("commit", request->key(), [&] {
        std::lock_guard lock(mutex_);
        Snapshot s = existing(store_, request->key());
        if (s.kind != SnapshotKind::Active) {
            failWith(grpc::StatusCode::FAILED_PRECONDITION, "snapshot {} is {}, not active", request->key(),
                     kindName(s.kind));
        }
        if (request->name().empty()) failWith(grpc::StatusCode::INVALID_ARGUMENT, "no name to commit {} as", request->key());
        if (store_.find(request->name())) {
            failWith(grpc::StatusCode::ALREADY_EXISTS, "snapshot {} already exists", request->name());
        }
        s.kind = SnapshotKind::Committed;
        for (const auto& [k, v] : request->labels()) s.labels[k] = v;
        s.updated_ns = nowNs();
        store_.rename(request->key(), request->name(), s);
        std::error_code ec;
        fs::remove_all(store_.workDir(s.id), ec);
    });
}

grpc::Status SnapshotService::Remove(grpc::ServerContext*, const snapshots_api::RemoveSnapshotRequest* request,
                                     google::protobuf::Empty*) {
    return answer("remove", request->key(), [&] {
        std::unique_lock lock(mutex_);
        // Not while its image is being mounted: the mount would outlive the snapshot.
        settled_.wait(lock, [&] {
            const auto s = store_.find(request->key());
            return !s || !ensuring_.contains(s->id);
        });
        const Snapshot s = existing(store_, request->key());
        if (store_.hasChildren(request->key())) {
            failWith(grpc::StatusCode::FAILED_PRECONDITION, "snapshot {} has children", request->key());
        }
        // The record goes first: a crash before the files are gone leaves files nobody owns, which
        // Cleanup removes, never a record without its files.
        store_.erase(request->key());
        releaseFilesOrLog(s, "remove " + request->key());
    });
}

grpc::Status SnapshotService::Stat(grpc::ServerContext*, const snapshots_api::StatSnapshotRequest* request,
                                   snapshots_api::StatSnapshotResponse* response) {
    return answer("stat", request->key(), [&] { fillInfo(response->mutable_info(), request->key(), existing(store_, request->key())); });
}

grpc::Status SnapshotService::Update(grpc::ServerContext*, const snapshots_api::UpdateSnapshotRequest* request,
                                     snapshots_api::UpdateSnapshotResponse* response) {
    const std::string& key = request->info().name();
    return answer("update", key, [&] {
        std::lock_guard lock(mutex_);
        Snapshot s = existing(store_, key);
        const Labels wanted = labelsOf(request->info().labels());
        if (request->update_mask().paths().empty()) s.labels = wanted;
        for (const std::string& path : request->update_mask().paths()) {
            if (path == "labels") {
                s.labels = wanted;
            } else if (path.starts_with("labels.")) {
                const std::string name = path.substr(7);
                if (auto it = wanted.find(name); it != wanted.end()) s.labels[name] = it->second;
                else s.labels.erase(name);
            } else {
                failWith(grpc::StatusCode::INVALID_ARGUMENT, "cannot update field {} of snapshot {}", path, key);
            }
        }
        s.updated_ns = nowNs();
        store_.put(key, s);
        fillInfo(response->mutable_info(), key, s);
    });
}

grpc::Status SnapshotService::List(grpc::ServerContext*, const snapshots_api::ListSnapshotsRequest* request,
                                   grpc::ServerWriter<snapshots_api::ListSnapshotsResponse>* writer) {
    return answer("list", "", [&] {
        SnapshotFilter filter({request->filters().begin(), request->filters().end()});
        constexpr int kBatch = 100;  // infos per message, well below gRPC's 4 MiB message limit
        snapshots_api::ListSnapshotsResponse batch;
        for (const auto& [key, s] : store_.all()) {
            if (!filter.matches(key, s)) continue;
            fillInfo(batch.add_info(), key, s);
            if (batch.info_size() == kBatch) {
                writer->Write(batch);
                batch.Clear();
            }
        }
        if (batch.info_size() > 0) writer->Write(batch);
    });
}

grpc::Status SnapshotService::Usage(grpc::ServerContext*, const snapshots_api::UsageRequest* request,
                                    snapshots_api::UsageResponse* response) {
    return answer("usage", request->key(), [&] {
        const Snapshot s = existing(store_, request->key());
        // A RAFS image's bytes live in rafsd's cache (rafsctl status), not in the snapshot.
        if (s.backing != Backing::Directory) return;
        const auto [bytes, inodes] = diskUsage(store_.fsDir(s));
        response->set_size(bytes);
        response->set_inodes(inodes);
    });
}

grpc::Status SnapshotService::Cleanup(grpc::ServerContext*, const snapshots_api::CleanupRequest*,
                                      google::protobuf::Empty*) {
    return answer("cleanup", "", [&] {
        std::lock_guard lock(mutex_);
        removeOrphans();
    });
}

}  // namespace rafsd
