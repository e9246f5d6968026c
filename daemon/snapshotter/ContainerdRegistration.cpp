#include "daemon/snapshotter/ContainerdRegistration.h"

#include "format/Error.h"
#include "registry/ImageReference.h"
#include "registry/ImageResolver.h"
#include "registry/ImageStore.h"

#include "snapshots.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fmt/chrono.h>
#include <nlohmann/json.hpp>
#include <random>

namespace rafsd {

namespace {

namespace api = containerd::services::snapshots::v1;

// Generous: the bootstrap layer's Prepare has rafsd fetch the bootstrap.
constexpr std::chrono::minutes kCallTimeout{5};
constexpr const char* kGcRoot = "containerd.io/gc.root";
constexpr const char* kInheritedPrefix = "containerd.io/snapshot/";

struct Image {
    registry::ImageReference ref;
    registry::ResolvedManifest resolved;
    std::vector<RegisteredLayer> layers;
};

// The RAFS manifest `image` names for this host, and its layers' chain IDs.
Image resolve(RemoteLayers& registries, const std::string& image) {
    Image out;
    out.ref = registry::ImageReference::parse(image);
    if (out.ref.kind != registry::ImageReference::Kind::Registry) rafs::fail("{} is not an image in a registry", image);
    auto client = registries.client(out.ref.host, out.ref.repository);
    registry::RegistryStore store(client);
    out.resolved = registry::resolveManifest(store, out.ref.reference(), registry::Platform::host(),
                                             registry::ImageKind::Rafs, image);
    const registry::Manifest& m = out.resolved.manifest;
    if (!m.isRafs()) rafs::fail("{} is not a RAFS image (its last layer is no Nydus bootstrap)", image);
    const std::vector<std::string> chains = registries.chainIds(out.ref, m, image);
    for (size_t i = 0; i < chains.size(); ++i) out.layers.push_back({m.layers[i].digest, chains[i]});
    return out;
}

class Containerd {
public:
    explicit Containerd(const ContainerdTarget& target)
        : target_(target),
          stub_(api::Snapshots::NewStub(
              grpc::CreateChannel("unix:" + target.socket.string(), grpc::InsecureChannelCredentials()))) {}

    grpc::Status prepare(const std::string& key, const std::string& parent, const std::map<std::string, std::string>& labels) {
        api::PrepareSnapshotRequest request;
        request.set_snapshotter(target_.snapshotter);
        request.set_key(key);
        request.set_parent(parent);
        request.mutable_labels()->insert(labels.begin(), labels.end());
        api::PrepareSnapshotResponse response;
        auto context = this->context();
        return stub_->Prepare(context.get(), request, &response);
    }

    grpc::Status remove(const std::string& key) {
        api::RemoveSnapshotRequest request;
        request.set_snapshotter(target_.snapshotter);
        request.set_key(key);
        google::protobuf::Empty response;
        auto context = this->context();
        return stub_->Remove(context.get(), request, &response);
    }

    [[noreturn]] void fail(const std::string& what, const grpc::Status& status) const {
        rafs::fail("{}: containerd at {} (namespace {}, snapshotter {}): {}", what, target_.socket.string(),
                   target_.namespace_name, target_.snapshotter, status.error_message());
    }

private:
    std::unique_ptr<grpc::ClientContext> context() const {
        auto context = std::make_unique<grpc::ClientContext>();
        context->AddMetadata("containerd-namespace", target_.namespace_name);
        context->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
        return context;
    }

    const ContainerdTarget& target_;
    std::unique_ptr<api::Snapshots::Stub> stub_;
};

std::string randomSuffix() {
    std::random_device random;
    return fmt::format("{:08x}{:08x}", random(), random());
}

}  // namespace

std::vector<RegisteredLayer> registerImage(RemoteLayers& registries, const ContainerdTarget& target,
                                           const std::string& image) {
    const Image img = resolve(registries, image);
    Containerd containerd(target);
    const std::string gc_root = fmt::format("{:%FT%TZ}", std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
    std::string parent;
    for (size_t i = 0; i < img.layers.size(); ++i) {
        const registry::Descriptor& layer = img.resolved.manifest.layers[i];
        std::map<std::string, std::string> labels = {{label::kSnapshotRef, img.layers[i].chain_id},
                                                     {label::kImageRef, img.ref.str()},
                                                     {label::kManifestDigest, img.resolved.fetched.digest},
                                                     {label::kLayerDigest, layer.digest}};
        for (const auto& [k, v] : layer.annotations) {
            if (k.starts_with(kInheritedPrefix)) labels.emplace(k, v);
        }
        // containerd keeps this label on its own record only (it is not passed to the snapshotter).
        // Nothing else references the chain until a container does, and a garbage collection
        // in between (one runs after every lease a client drops) would remove it.
        labels.emplace(kGcRoot, gc_root);
        const std::string key = fmt::format("rafs-register-{}-{}", i, randomSuffix());
        const grpc::Status status = containerd.prepare(key, parent, labels);
        const std::string what = fmt::format("{}: layer {} ({})", image, i, layer.digest);
        if (status.ok()) {
            const grpc::Status removed = containerd.remove(key);
            rafs::fail("{}: the snapshotter prepared it as an ordinary layer, not remotely (is {} rafs-snapshotter?){}",
                       what, target.snapshotter,
                       removed.ok() ? "" : "; removing snapshot " + key + " failed: " + removed.error_message());
        }
        if (status.error_code() != grpc::StatusCode::ALREADY_EXISTS) containerd.fail(what, status);
        parent = img.layers[i].chain_id;
    }
    return img.layers;
}

void unregisterImage(RemoteLayers& registries, const ContainerdTarget& target, const std::string& image) {
    const Image img = resolve(registries, image);
    Containerd containerd(target);
    for (auto it = img.layers.rbegin(); it != img.layers.rend(); ++it) {
        const grpc::Status status = containerd.remove(it->chain_id);
        if (!status.ok() && status.error_code() != grpc::StatusCode::NOT_FOUND) {
            containerd.fail(fmt::format("{}: removing snapshot {}", image, it->chain_id), status);
        }
    }
}

}  // namespace rafsd
