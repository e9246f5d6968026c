#include "registry/OciImage.h"

#include "format/Digest.h"
#include "format/Error.h"

#include <sys/utsname.h>

#include <algorithm>
#include <array>

namespace registry {

using nlohmann::json;

namespace media {
bool isIndex(std::string_view type) { return type == kOciIndex || type == kDockerList; }
bool isManifest(std::string_view type) { return type == kOciManifest || type == kDockerManifest; }
bool isTarLayer(std::string_view type) {
    static constexpr std::array<std::string_view, 11> kTarLayers = {
        kOciLayer,
        kOciLayerGzip,
        kOciLayerZstd,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        kDockerLayer,
        kDockerLayerGzip,
        kDockerLayerZstd,
        kDockerForeignLayer,
        kDockerForeignLayerGzip,
    };
    return std::find(kTarLayers.begin(), kTarLayers.end(), type) != kTarLayers.end();
}
}  // namespace media

namespace {

const json& field(const json& j, const char* name, std::string_view where) {
    if (!j.is_object() || !j.contains(name)) rafs::fail("{}: no \"{}\"", where, name);
    return j[name];
}

std::string stringField(const json& j, const char* name, std::string_view where) {
    const json& v = field(j, name, where);
    if (!v.is_string()) rafs::fail("{}: \"{}\" is not a string", where, name);
    return v.get<std::string>();
}

std::string optionalString(const json& j, const char* name, std::string_view where) {
    if (!j.contains(name)) return {};
    if (!j[name].is_string()) rafs::fail("{}: \"{}\" is not a string", where, name);
    return j[name].get<std::string>();
}

std::map<std::string, std::string> stringMap(const json& j, const char* name, std::string_view where) {
    std::map<std::string, std::string> out;
    if (!j.contains(name) || j[name].is_null()) return out;
    if (!j[name].is_object()) rafs::fail("{}: \"{}\" is not an object", where, name);
    for (const auto& [key, value] : j[name].items()) {
        if (!value.is_string()) rafs::fail("{}: {}[\"{}\"] is not a string", where, name, key);
        out[key] = value.get<std::string>();
    }
    return out;
}

json parseDocument(std::string_view bytes, std::string_view where) {
    json j = json::parse(bytes, nullptr, false);
    if (j.is_discarded()) rafs::fail("{}: not valid JSON", where);
    if (!j.is_object()) rafs::fail("{}: not a JSON object", where);
    if (j.contains("schemaVersion") && j["schemaVersion"] != 2) rafs::fail("{}: schemaVersion is not 2", where);
    return j;
}

// The document's own mediaType must agree with the one it was served as, when both are given.
std::string documentType(const json& j, std::string_view served, std::string_view where) {
    const std::string own = optionalString(j, "mediaType", where);
    if (!own.empty() && !served.empty() && own != served) {
        rafs::fail("{}: served as {} but says it is {}", where, served, own);
    }
    return own.empty() ? std::string(served) : own;
}

std::vector<Descriptor> descriptors(const json& j, const char* name, std::string_view where) {
    const json& list = field(j, name, where);
    if (!list.is_array()) rafs::fail("{}: \"{}\" is not an array", where, name);
    std::vector<Descriptor> out;
    for (size_t i = 0; i < list.size(); ++i) {
        out.push_back(Descriptor::fromJson(list[i], fmt::format("{}: {}[{}]", where, name, i)));
    }
    return out;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::strict); }

}  // namespace

Platform Platform::parse(std::string_view text) {
    Platform p;
    std::vector<std::string> parts;
    size_t start = 0;
    for (;;) {
        const size_t slash = text.find('/', start);
        parts.emplace_back(text.substr(start, slash == std::string_view::npos ? slash : slash - start));
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty() ||
        (parts.size() == 3 && parts[2].empty())) {
        rafs::fail("platform '{}': expected OS/ARCH or OS/ARCH/VARIANT, such as linux/amd64", text);
    }
    p.os = parts[0];
    p.architecture = parts[1];
    if (parts.size() == 3) p.variant = parts[2];
    return p;
}

Platform Platform::host() {
    struct utsname u {};
    if (::uname(&u) != 0) rafs::failErrno("uname");
    const std::string machine = u.machine;
    // Go's GOARCH names, as image indexes use them.
    static const std::map<std::string, std::string> arch = {
        {"x86_64", "amd64"}, {"aarch64", "arm64"}, {"i686", "386"}, {"i386", "386"},
        {"armv7l", "arm"},   {"ppc64le", "ppc64le"}, {"s390x", "s390x"}, {"riscv64", "riscv64"}};
    const auto it = arch.find(machine);
    return {"linux", it != arch.end() ? it->second : machine, {}, {}};
}

Platform Platform::ofConfig(const nlohmann::json& config) {
    Platform p;
    if (!config.is_object()) return p;
    const auto text = [&](const char* key, const char* otherwise) {
        const auto it = config.find(key);
        return it != config.end() && it->is_string() ? it->get<std::string>() : std::string(otherwise);
    };
    p.os = text("os", "linux");
    p.architecture = text("architecture", "");
    p.variant = text("variant", "");
    return p;
}

std::string Platform::str() const { return os + "/" + architecture + (variant.empty() ? "" : "/" + variant); }

namespace {

// A variant as containerd normalises it (platforms.Normalize): arm64's v8 and amd64's v1 are the
// default, named by no variant; arm without one is v7.
std::string normalVariant(const std::string& architecture, const std::string& variant) {
    if (architecture == "arm64" && (variant == "v8" || variant == "8")) return "";
    if (architecture == "amd64" && variant == "v1") return "";
    if (architecture == "arm" && (variant.empty() || variant == "7")) return "v7";
    if (architecture == "arm" && (variant == "5" || variant == "6" || variant == "8")) return "v" + variant;
    return variant;
}

}  // namespace

bool Platform::matches(const Platform& wanted) const {
    if (os != wanted.os || architecture != wanted.architecture) return false;
    const std::string want = normalVariant(wanted.architecture, wanted.variant);
    return want.empty() || normalVariant(architecture, variant) == want;
}

std::vector<std::string> configDiffIds(const nlohmann::json& config, size_t layers, const std::string& what) {
    const auto rootfs = config.find("rootfs");
    const nlohmann::json* list = rootfs != config.end() && rootfs->is_object() && rootfs->contains("diff_ids")
                                     ? &rootfs->at("diff_ids")
                                     : nullptr;
    if (list == nullptr || !list->is_array()) rafs::fail("{}: no rootfs.diff_ids list", what);
    if (list->size() != layers) rafs::fail("{}: rootfs.diff_ids lists {} layers, the manifest {}", what, list->size(), layers);
    std::vector<std::string> out;
    for (const nlohmann::json& id : *list) {
        if (!id.is_string()) rafs::fail("{}: rootfs.diff_ids holds {}, not a digest", what, id.dump());
        checkDigest(id.get<std::string>(), what + ": rootfs.diff_ids");
        out.push_back(id.get<std::string>());
    }
    return out;
}

void checkDigest(std::string_view digest, std::string_view where) {
    bool ok = digest.size() == 71 && digest.starts_with("sha256:");
    for (size_t i = 7; ok && i < digest.size(); ++i) {
        const char c = digest[i];
        ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    }
    if (!ok) rafs::fail("{}: digest '{}' is not sha256:<64 lowercase hex digits>", where, digest);
}

std::string sha256Digest(std::string_view bytes) {
    return "sha256:" + rafs::toHex(rafs::digestOf(rafs::Digester::Sha256,
                                                  {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}));
}

Descriptor Descriptor::fromJson(const json& j, std::string_view where) {
    if (!j.is_object()) rafs::fail("{}: not an object", where);
    Descriptor d;
    d.media_type = stringField(j, "mediaType", where);
    d.digest = stringField(j, "digest", where);
    checkDigest(d.digest, where);
    const json& size = field(j, "size", where);
    if (!size.is_number_unsigned()) rafs::fail("{}: \"size\" is not a non-negative integer", where);
    d.size = size.get<uint64_t>();
    d.annotations = stringMap(j, "annotations", where);
    d.artifact_type = optionalString(j, "artifactType", where);
    if (j.contains("platform")) {
        const json& p = j["platform"];
        const std::string pw = std::string(where) + ": platform";
        Platform platform;
        platform.os = stringField(p, "os", pw);
        platform.architecture = stringField(p, "architecture", pw);
        platform.variant = optionalString(p, "variant", pw);
        if (p.contains("os.features")) {
            if (!p["os.features"].is_array()) rafs::fail("{}: \"os.features\" is not an array", pw);
            for (const json& f : p["os.features"]) {
                if (!f.is_string()) rafs::fail("{}: \"os.features\" holds a non-string", pw);
                platform.os_features.push_back(f.get<std::string>());
            }
        }
        d.platform = platform;
    }
    return d;
}

json Descriptor::toJson() const {
    json j = {{"mediaType", media_type}, {"digest", digest}, {"size", size}};
    if (!annotations.empty()) j["annotations"] = annotations;
    if (!artifact_type.empty()) j["artifactType"] = artifact_type;
    if (platform) {
        json p = {{"os", platform->os}, {"architecture", platform->architecture}};
        if (!platform->variant.empty()) p["variant"] = platform->variant;
        if (!platform->os_features.empty()) p["os.features"] = platform->os_features;
        j["platform"] = p;
    }
    return j;
}

bool Descriptor::hasAnnotation(const std::string& key, std::string_view value) const {
    const auto it = annotations.find(key);
    return it != annotations.end() && it->second == value;
}

Manifest Manifest::parse(std::string_view bytes, std::string_view media_type, std::string_view where) {
    const json j = parseDocument(bytes, where);
    Manifest m;
    m.media_type = documentType(j, media_type, where);
    if (!media::isManifest(m.media_type)) rafs::fail("{}: media type '{}' is not an image manifest", where, m.media_type);
    m.config = Descriptor::fromJson(field(j, "config", where), std::string(where) + ": config");
    m.layers = descriptors(j, "layers", where);
    m.annotations = stringMap(j, "annotations", where);
    if (j.contains("subject")) m.subject = Descriptor::fromJson(j["subject"], std::string(where) + ": subject");
    return m;
}

std::string Manifest::serialize() const {
    json j = {{"schemaVersion", 2}, {"mediaType", media_type}, {"config", config.toJson()}, {"layers", json::array()}};
    for (const Descriptor& d : layers) j["layers"].push_back(d.toJson());
    if (!annotations.empty()) j["annotations"] = annotations;
    if (subject) j["subject"] = subject->toJson();
    return dump(j);
}

bool Manifest::isRafs() const {
    return !layers.empty() && layers.back().hasAnnotation(annotation::kNydusBootstrap);
}

Index Index::parse(std::string_view bytes, std::string_view media_type, std::string_view where) {
    const json j = parseDocument(bytes, where);
    Index index;
    index.media_type = documentType(j, media_type, where);
    if (index.media_type.empty()) index.media_type = media::kOciIndex;  // an OCI layout's index.json
    if (!media::isIndex(index.media_type)) rafs::fail("{}: media type '{}' is not an image index", where, index.media_type);
    index.manifests = descriptors(j, "manifests", where);
    index.annotations = stringMap(j, "annotations", where);
    return index;
}

std::string Index::serialize() const {
    json j = {{"schemaVersion", 2}, {"mediaType", media_type}, {"manifests", json::array()}};
    for (const Descriptor& d : manifests) j["manifests"].push_back(d.toJson());
    if (!annotations.empty()) j["annotations"] = annotations;
    return dump(j);
}

}  // namespace registry
