// The OCI image spec's JSON documents (image-spec descriptor.md, manifest.md, image-index.md,
// config.md) and their Docker schema 2 twins, parsed with every field rafs uses checked, so a
// malformed manifest is one error naming the field rather than a crash or a wrong mount.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace registry {

namespace media {
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayer = "application/vnd.docker.image.rootfs.diff.tar";
inline constexpr std::string_view kDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerLayerZstd = "application/vnd.docker.image.rootfs.diff.tar.zstd";
inline constexpr std::string_view kDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar";
inline constexpr std::string_view kDockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
// Nydus (containerd/nydus-snapshotter pkg/converter/constant.go).
inline constexpr std::string_view kNydusBlob = "application/vnd.oci.image.layer.nydus.blob.v1";
inline constexpr std::string_view kNydusManifestArtifact = "application/vnd.nydus.image.manifest.v1+json";
// What a manifest GET accepts.
inline constexpr std::string_view kAcceptManifests =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

bool isIndex(std::string_view type);
bool isManifest(std::string_view type);
// A tar layer (plain, gzip or zstd; OCI or Docker, non-distributable and foreign ones too: the
// media types containerd's images package knows); false for Nydus blobs and encrypted layers.
bool isTarLayer(std::string_view type);
}  // namespace media

namespace annotation {
inline constexpr const char* kNydusBlob = "containerd.io/snapshot/nydus-blob";
inline constexpr const char* kNydusBootstrap = "containerd.io/snapshot/nydus-bootstrap";
inline constexpr const char* kNydusFsVersion = "containerd.io/snapshot/nydus-fs-version";
inline constexpr const char* kNydusEncryptedBlob = "containerd.io/snapshot/nydus-encrypted-blob";
inline constexpr const char* kUncompressed = "containerd.io/uncompressed";
inline constexpr const char* kRefName = "org.opencontainers.image.ref.name";
}  // namespace annotation

struct Platform {
    std::string os;
    std::string architecture;
    std::string variant;
    std::vector<std::string> os_features;

    // "linux/amd64" or "linux/arm64/v8"; throws rafs::Error for anything else.
    static Platform parse(std::string_view text);
    // This machine's (linux and the GOARCH name of its CPU).
    static Platform host();
    // What an image config names (os, default linux; architecture; variant): the platform of an
    // index entry that names none, as containerd reads it too.
    static Platform ofConfig(const nlohmann::json& config);
    std::string str() const;
    // Same os and architecture, and the variant when `wanted` names one other than its
    // architecture's default (arm64/v8 matches arm64; arm matches arm/v7), as containerd matches.
    bool matches(const Platform& wanted) const;
};

struct Descriptor {
    std::string media_type;
    std::string digest;  // "sha256:<64 hex>"
    uint64_t size = 0;
    std::map<std::string, std::string> annotations;
    std::optional<Platform> platform;
    std::string artifact_type;

    // Throws rafs::Error naming `where` and the field.
    static Descriptor fromJson(const nlohmann::json& j, std::string_view where);
    nlohmann::json toJson() const;
    bool hasAnnotation(const std::string& key, std::string_view value = "true") const;
};

struct Manifest {
    std::string media_type;  // as the document (or the registry) says
    Descriptor config;
    std::vector<Descriptor> layers;
    std::map<std::string, std::string> annotations;
    std::optional<Descriptor> subject;

    static Manifest parse(std::string_view bytes, std::string_view media_type, std::string_view where);
    // Serialised with sorted keys and no whitespace, so the same manifest has the same digest.
    std::string serialize() const;
    // The last layer carries the Nydus bootstrap annotation (rafs-v6.md §5).
    bool isRafs() const;
};

struct Index {
    std::string media_type;
    std::vector<Descriptor> manifests;
    std::map<std::string, std::string> annotations;

    static Index parse(std::string_view bytes, std::string_view media_type, std::string_view where);
    std::string serialize() const;
};

// An image config's rootfs.diff_ids, one per layer of a manifest of `layers` layers; throws
// rafs::Error naming `what` unless that is what the config holds.
std::vector<std::string> configDiffIds(const nlohmann::json& config, size_t layers, const std::string& what);
// The largest image config read (its history can be long; its layers are not in it).
inline constexpr uint64_t kMaxConfigBytes = 8 << 20;

// "sha256:<hex>" of `bytes`.
std::string sha256Digest(std::string_view bytes);
// Throws rafs::Error naming `where` unless `digest` is "sha256:" and 64 lowercase hex digits.
void checkDigest(std::string_view digest, std::string_view where);

}  // namespace registry
