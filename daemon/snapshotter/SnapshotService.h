// containerd.services.snapshots.v1.Snapshots (containerd api/services/snapshots/v1/snapshots.proto)
// over the snapshots SnapshotStore keeps: ordinary layers as containerd's overlayfs snapshotter
// keeps them, and RAFS images as remote snapshots. For a layer of a RAFS image (RemoteLayers),
// Prepare commits the snapshot itself under the name containerd asks for (the snapshot.ref label,
// the layer's chain ID) and answers ALREADY_EXISTS: containerd then looks the committed snapshot
// up with List and never fetches the layer (containerd metadata/snapshot.go, createSnapshot). A
// data-blob layer is an empty snapshot; the bootstrap layer's snapshot is the whole image, mounted
// by rafsd; a container's snapshot on top of it is an overlay whose lower layer is that mount.
// Any other Prepare creates an ordinary snapshot: containerd retries an ALREADY_EXISTS of an
// unlabelled Prepare with a new key forever.
#pragma once

#include "daemon/snapshotter/RafsdMounts.h"
#include "daemon/snapshotter/RemoteLayers.h"
#include "daemon/snapshotter/SnapshotStore.h"

#include "snapshots.grpc.pb.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>

namespace rafsd {

namespace snapshots_api = containerd::services::snapshots::v1;

class SnapshotService final : public snapshots_api::Snapshots::Service {
public:
    SnapshotService(SnapshotStore& store, RemoteLayers& remote, RafsdMounts& mounts)
        : store_(store), remote_(remote), mounts_(mounts) {}

    // At start, before serving: removes what a crash left behind (Cleanup).
    void removeLeftovers();
    // At start, while serving (rafsd may need the registry for each): mounts again the RAFS images
    // whose mounts are gone (after a reboot), until `stop`. Failures are logged; Mounts tries again.
    void remountImages(const std::atomic<bool>& stop);

    grpc::Status Prepare(grpc::ServerContext*, const snapshots_api::PrepareSnapshotRequest* request,
                         snapshots_api::PrepareSnapshotResponse* response) override;
    grpc::Status View(grpc::ServerContext*, const snapshots_api::ViewSnapshotRequest* request,
                      snapshots_api::ViewSnapshotResponse* response) override;
    grpc::Status Mounts(grpc::ServerContext*, const snapshots_api::MountsRequest* request,
                        snapshots_api::MountsResponse* response) override;
    grpc::Status Commit(grpc::ServerContext*, const snapshots_api::CommitSnapshotRequest* request,
                        google::protobuf::Empty*) override;
    grpc::Status Remove(grpc::ServerContext*, const snapshots_api::RemoveSnapshotRequest* request,
                        google::protobuf::Empty*) override;
    grpc::Status Stat(grpc::ServerContext*, const snapshots_api::StatSnapshotRequest* request,
                      snapshots_api::StatSnapshotResponse* response) override;
    grpc::Status Update(grpc::ServerContext*, const snapshots_api::UpdateSnapshotRequest* request,
                        snapshots_api::UpdateSnapshotResponse* response) override;
    grpc::Status List(grpc::ServerContext*, const snapshots_api::ListSnapshotsRequest* request,
                      grpc::ServerWriter<snapshots_api::ListSnapshotsResponse>* writer) override;
    grpc::Status Usage(grpc::ServerContext*, const snapshots_api::UsageRequest* request,
                       snapshots_api::UsageResponse* response) override;
    grpc::Status Cleanup(grpc::ServerContext*, const snapshots_api::CleanupRequest*, google::protobuf::Empty*) override;

private:
    using Labels = std::map<std::string, std::string>;
    using MountList = google::protobuf::RepeatedPtrField<containerd::types::Mount>;

    void create(const std::string& key, const std::string& parent, const Labels& labels, SnapshotKind kind,
                MountList* mounts);
    // Commits the layer under its snapshot.ref name, then throws ALREADY_EXISTS. `lock` holds
    // mutex_; it is let go while rafsd mounts a bootstrap layer's image.
    [[noreturn]] void createRemote(std::unique_lock<std::mutex>& lock, const std::string& parent, const Labels& labels,
                                   const RemoteLayer& layer);
    // Mounts, where they need it (after a reboot, or when rafsd lost them), the RAFS images that
    // `key`'s chain stands on, before anyone uses them. `lock` holds mutex_ and is let go while
    // rafsd mounts one (it may fetch the bootstrap from the registry), so that no other call
    // waits for that; then throws NOT_FOUND if `key` was removed meanwhile.
    void ensureImages(std::unique_lock<std::mutex>& lock, const std::string& key);
    // One of those, of snapshot `key`, pinned meanwhile: a Remove of it, or a second ensure of
    // it, waits for this one. Throws NOT_FOUND if it was removed while this one waited.
    void ensureImage(std::unique_lock<std::mutex>& lock, const std::string& key);
    // The overlay mounts of `key`; with mutex_ held.
    void mountsOf(const std::string& key, MountList* mounts);
    void releaseFiles(const Snapshot& snapshot);
    // The same where the snapshot's record is gone already: a failure is logged (Cleanup removes
    // what no record owns), and an error being thrown stays the one the caller sees.
    void releaseFilesOrLog(const Snapshot& snapshot, const std::string& key);
    void removeOrphans();

    SnapshotStore& store_;
    RemoteLayers& remote_;
    RafsdMounts& mounts_;
    std::mutex mutex_;  // one change at a time: a Prepare sees the table the last one left
    std::map<std::string, uint64_t> committing_;  // remote snapshots whose image rafsd is mounting: their ids
    std::set<uint64_t> ensuring_;  // snapshots whose image ensureImage is mounting
    std::condition_variable settled_;   // one of those committed or failed, or one ensured
};

}  // namespace rafsd
