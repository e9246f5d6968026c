#include "registry/ImageResolver.h"

#include "format/Error.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace registry {

bool isRafsEntry(const Descriptor& entry) {
    if (entry.artifact_type == media::kNydusManifestArtifact) return true;
    return entry.platform && std::ranges::find(entry.platform->os_features, "nydus.remoteimage.v1") !=
                                 entry.platform->os_features.end();
}

namespace {

std::string documentType(const FetchedManifest& fetched) {
    if (!fetched.media_type.empty() && fetched.media_type != "application/json" &&
        fetched.media_type != "application/octet-stream") {
        return fetched.media_type;
    }
    // Some servers (and OCI layouts' blobs) do not say; the document does.
    const auto j = nlohmann::json::parse(fetched.bytes, nullptr, false);
    if (j.is_object() && j.contains("mediaType") && j["mediaType"].is_string()) return j["mediaType"].get<std::string>();
    if (j.is_object() && j.contains("manifests")) return std::string(media::kOciIndex);
    return std::string(media::kOciManifest);
}

ResolvedManifest asManifest(FetchedManifest fetched, const std::string& type, const std::string& name) {
    ResolvedManifest out;
    out.manifest = Manifest::parse(fetched.bytes, type, name);
    out.fetched = std::move(fetched);
    out.fetched.media_type = type;
    return out;
}

// BuildKit's attestations (SBOM, provenance) are manifests of an index too, of no platform
// ("unknown/unknown") and in-toto layers: not images of any platform.
bool isAttestation(const Descriptor& d) {
    return d.hasAnnotation("vnd.docker.reference.type", "attestation-manifest") ||
           (d.platform && d.platform->os == "unknown");
}

std::vector<const Descriptor*> entriesOfKind(const Index& index, ImageKind kind) {
    std::vector<const Descriptor*> out;
    for (const Descriptor& d : index.manifests) {
        if (!media::isManifest(d.media_type) || isAttestation(d)) continue;
        if ((kind == ImageKind::Rafs) == isRafsEntry(d)) out.push_back(&d);
    }
    return out;
}

}  // namespace

ResolvedManifest fetchEntry(ImageStore& store, const Descriptor& entry, const std::string& name) {
    if (!media::isManifest(entry.media_type)) {
        rafs::fail("{}: index entry {} is a {}, not an image manifest", name, entry.digest, entry.media_type);
    }
    FetchedManifest fetched = store.manifest(entry.digest);
    ResolvedManifest out = asManifest(std::move(fetched), entry.media_type, name + "@" + entry.digest);
    out.platform = entry.platform;
    return out;
}

namespace {

// A manifest of the other kind than asked for is refused here, whether named directly or through
// an index entry, so that no caller has to repeat the check.
ResolvedManifest ofKind(ResolvedManifest m, ImageKind kind, const Platform& platform, const std::string& name) {
    if (m.manifest.isRafs() == (kind == ImageKind::Rafs)) return m;
    const std::string what = m.platform ? "the image for " + platform.str() : std::string("the image");
    if (kind == ImageKind::Rafs) {
        rafs::fail("{}: {} is an ordinary OCI image, not a RAFS image (its last layer is no Nydus bootstrap); "
                   "`mkrafs convert` makes one", name, what);
    }
    rafs::fail("{}: {} is a RAFS image already", name, what);
}

}  // namespace

ResolvedManifest resolveManifest(ImageStore& store, const std::string& reference, const Platform& platform,
                                 ImageKind kind, const std::string& name) {
    FetchedManifest fetched = store.manifest(reference);
    const std::string type = documentType(fetched);
    if (media::isManifest(type)) return ofKind(asManifest(std::move(fetched), type, name), kind, platform, name);
    if (!media::isIndex(type)) rafs::fail("{}: media type '{}' is neither an image index nor a manifest", name, type);
    const Index index = Index::parse(fetched.bytes, type, name);
    std::vector<std::string> seen;  // for the error, should no entry be the one
    const auto saw = [&](std::string what) {
        if (std::ranges::find(seen, what) == seen.end()) seen.push_back(std::move(what));
    };
    const Descriptor* chosen = nullptr;
    const Descriptor* unmarked = nullptr;  // a RAFS image in an index without Nydus's marks
    std::vector<const Descriptor*> unplaced;  // entries that name no platform: their configs do
    for (const Descriptor& d : index.manifests) {
        if (media::isIndex(d.media_type)) {
            saw((d.platform ? d.platform->str() : "no platform") + " (an index: not followed)");
            continue;
        }
        if (!media::isManifest(d.media_type) || isAttestation(d)) continue;
        if (!d.platform) {
            // An artifact (a signature, an SBOM) is no image, and may have no image config.
            if (d.artifact_type.empty() || isRafsEntry(d)) unplaced.push_back(&d);
            continue;
        }
        saw(d.platform->str());
        if (!d.platform->matches(platform)) continue;
        if ((kind == ImageKind::Rafs) == isRafsEntry(d)) {
            if (chosen == nullptr) chosen = &d;
        } else if (unmarked == nullptr) {
            unmarked = &d;
        }
    }
    if (chosen != nullptr) return ofKind(fetchEntry(store, *chosen, name), kind, platform, name);
    if (unmarked != nullptr) return ofKind(fetchEntry(store, *unmarked, name), kind, platform, name);
    for (const Descriptor* d : unplaced) {
        // One that cannot be read is named in the error below, should no other entry do.
        std::optional<ResolvedManifest> m;
        Platform of_config;
        try {
            m = fetchEntry(store, *d, name);
            const std::vector<uint8_t> config =
                readVerifiedBlob(store, m->manifest.config, kMaxConfigBytes, name + "@" + d->digest + ": config");
            of_config = Platform::ofConfig(nlohmann::json::parse(config, nullptr, false));
        } catch (const rafs::Error& e) {
            saw(fmt::format("{} of no platform, whose config cannot be read ({})", d->digest, e.what()));
            continue;
        }
        saw(of_config.architecture.empty() ? "no platform" : of_config.str() + " (by its config)");
        if (!of_config.matches(platform) || m->manifest.isRafs() != (kind == ImageKind::Rafs)) continue;
        m->platform = of_config;
        return std::move(*m);
    }
    std::string list;
    for (const std::string& p : seen) list += (list.empty() ? "" : ", ") + p;
    rafs::fail("{}: no manifest for {} in the index (it has: {})", name, platform.str(), list.empty() ? "none" : list);
}

std::vector<ResolvedManifest> resolveAllPlatforms(ImageStore& store, const std::string& reference, ImageKind kind,
                                                  const std::string& name) {
    FetchedManifest fetched = store.manifest(reference);
    const std::string type = documentType(fetched);
    std::vector<ResolvedManifest> out;
    if (media::isManifest(type)) {
        out.push_back(asManifest(std::move(fetched), type, name));
        return out;
    }
    if (!media::isIndex(type)) rafs::fail("{}: media type '{}' is neither an image index nor a manifest", name, type);
    const Index index = Index::parse(fetched.bytes, type, name);
    for (const Descriptor* d : entriesOfKind(index, kind)) out.push_back(fetchEntry(store, *d, name));
    if (out.empty()) rafs::fail("{}: the index holds no image manifest", name);
    return out;
}

}  // namespace registry
