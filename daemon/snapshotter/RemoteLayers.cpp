#include "daemon/snapshotter/RemoteLayers.h"

#include "daemon/api/NetworkBackends.h"
#include "daemon/core/Log.h"
#include "format/Error.h"
#include "registry/ImageReference.h"
#include "registry/ImageStore.h"

#include <nlohmann/json.hpp>

namespace rafsd {

namespace {

std::string valueOf(const std::map<std::string, std::string>& labels, const char* key) {
    auto it = labels.find(key);
    return it == labels.end() ? std::string() : it->second;
}

}  // namespace

std::shared_ptr<registry::RegistryClient> RemoteLayers::client(const std::string& host, const std::string& repository) {
    std::lock_guard lock(mutex_);
    auto& c = clients_[host + "/" + repository];
    if (!c) c = makeRegistryBackend(backend_, host, repository)->client();
    return c;
}

registry::Manifest RemoteLayers::manifest(const std::string& image_ref, const std::string& digest, bool needed) {
    const auto now = std::chrono::steady_clock::now();
    const auto ref = registry::ImageReference::parse(image_ref);
    if (ref.kind != registry::ImageReference::Kind::Registry) rafs::fail("{} is not an image in a registry", image_ref);
    const std::string where = ref.host + "/" + ref.repository + "@" + digest;
    {
        std::lock_guard lock(mutex_);
        if (auto it = manifests_.find(digest); it != manifests_.end()) return it->second;
        // Every layer of an image asks for the same manifest: a registry that did not answer for
        // one is not asked again for each of the others, unless the answer is needed.
        if (auto it = unreachable_.find(where);
            !needed && it != unreachable_.end() && now - it->second.first < kRetryUnreachable) {
            rafs::fail("{} (the last try, under a minute ago)", it->second.second);
        }
    }
    registry::FetchedManifest fetched;
    try {
        fetched = client(ref.host, ref.repository)->fetchManifest(digest);
    } catch (const rafs::Error& e) {
        std::lock_guard lock(mutex_);
        unreachable_[where] = {now, e.what()};
        throw;
    }
    if (!registry::media::isManifest(fetched.media_type)) {
        rafs::fail("{}@{} is a {}, not an image manifest", image_ref, digest, fetched.media_type);
    }
    registry::Manifest m = registry::Manifest::parse(fetched.bytes, fetched.media_type, image_ref + "@" + digest);
    std::lock_guard lock(mutex_);
    manifests_.emplace(digest, m);
    return m;
}

RemoteLayer RemoteLayers::classify(const std::map<std::string, std::string>& labels) {
    if (valueOf(labels, label::kSnapshotRef).empty()) return {};
    const std::string image_ref = valueOf(labels, label::kImageRef);
    const std::string manifest_digest = valueOf(labels, label::kManifestDigest);
    const std::string layer_digest = valueOf(labels, label::kLayerDigest);

    RemoteLayer::Role role = RemoteLayer::Role::None;
    if (valueOf(labels, registry::annotation::kNydusBootstrap) == "true") {
        role = RemoteLayer::Role::Bootstrap;
    } else if (valueOf(labels, registry::annotation::kNydusBlob) == "true") {
        role = RemoteLayer::Role::Blob;
    } else if (!image_ref.empty() && !manifest_digest.empty() && !layer_digest.empty()) {
        registry::Manifest m;
        try {
            m = manifest(image_ref, manifest_digest, false);
        } catch (const rafs::Error& e) {
            // Only a fallback (a RAFS image's layers carry the Nydus marks): an image this
            // registry configuration cannot reach is pulled as an ordinary one, not refused.
            log::warn("{}: cannot look layer {} up ({}); taking it as an ordinary layer", image_ref, layer_digest,
                      e.what());
            return {};
        }
        if (!m.isRafs()) return {};
        for (const registry::Descriptor& layer : m.layers) {
            if (layer.digest != layer_digest) continue;
            if (layer.hasAnnotation(registry::annotation::kNydusBootstrap)) role = RemoteLayer::Role::Bootstrap;
            else if (layer.media_type == registry::media::kNydusBlob) role = RemoteLayer::Role::Blob;
            break;
        }
    }
    if (role != RemoteLayer::Role::Bootstrap) return {role, ""};
    if (image_ref.empty() || manifest_digest.empty()) {
        rafs::fail("the bootstrap layer {} is labelled without {} and {}: rafsd cannot tell which image to mount",
                   layer_digest, label::kImageRef, label::kManifestDigest);
    }
    registry::checkDigest(manifest_digest, label::kManifestDigest);
    const auto ref = registry::ImageReference::parse(image_ref);
    if (ref.kind != registry::ImageReference::Kind::Registry) rafs::fail("{} is not an image in a registry", image_ref);
    const std::string image = ref.host + "/" + ref.repository + "@" + manifest_digest;
    const registry::Manifest m = manifest(image_ref, manifest_digest, true);
    const std::vector<std::string> chains = chainIds(ref, m, image);
    const std::string& snapshot_ref = labels.at(label::kSnapshotRef);
    if (!m.isRafs() || chains.empty() || chains.back() != snapshot_ref) {
        rafs::fail("the layer to be snapshot {} is labelled as the bootstrap of {}, whose chain ID is {}: its labels "
                   "name an image it is not part of",
                   snapshot_ref, image, chains.empty() ? std::string("none") : chains.back());
    }
    return {role, image};
}

std::vector<std::string> RemoteLayers::chainIds(const registry::ImageReference& image, const registry::Manifest& m,
                                                const std::string& name) {
    {
        std::lock_guard lock(mutex_);
        if (auto it = chains_.find(m.config.digest); it != chains_.end()) return it->second;
    }
    registry::RegistryStore store(client(image.host, image.repository));
    const std::vector<uint8_t> config =
        registry::readVerifiedBlob(store, m.config, registry::kMaxConfigBytes, name + ": config");
    const nlohmann::json parsed = nlohmann::json::parse(config, nullptr, false);
    if (!parsed.is_object()) rafs::fail("{}: config {} is not a JSON object", name, m.config.digest);
    const std::vector<std::string> diff_ids =
        registry::configDiffIds(parsed, m.layers.size(), name + ": config " + m.config.digest);
    std::vector<std::string> chains;
    for (size_t i = 0; i < diff_ids.size(); ++i) {
        chains.push_back(i == 0 ? diff_ids[i] : registry::sha256Digest(chains.back() + " " + diff_ids[i]));
    }
    std::lock_guard lock(mutex_);
    chains_.emplace(m.config.digest, chains);
    return chains;
}

}  // namespace rafsd
