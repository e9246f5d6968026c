#include "registry/ImageReference.h"

#include "format/Error.h"
#include "registry/OciImage.h"

#include <regex>

namespace registry {

namespace {

// distribution/reference's grammar (reference/regexp.go), without the default host.
const std::regex& hostPattern() {
    static const std::regex re(R"(^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[0-9a-fA-F:]+\])(:[0-9]+)?$)");
    return re;
}
const std::regex& repositoryPattern() {
    static const std::regex re(R"(^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$)");
    return re;
}
const std::regex& tagPattern() {
    static const std::regex re(R"(^[\w][\w.-]{0,127}$)");
    return re;
}

}  // namespace

bool ImageReference::looksLikeReference(std::string_view text) {
    try {
        parse(text);
        return true;
    } catch (const rafs::Error&) {
        return false;
    }
}

ImageReference ImageReference::parseTyped(std::string_view text) {
    ImageReference r = parse(text);
    // Docker's rule for where a name's host ends (distribution/reference, splitDockerDomain): a
    // first component without '.' or ':' that is not localhost is a path (a mistyped file here)
    // or a Docker Hub name, which needs its host written out.
    if (r.kind == Kind::Registry && r.host.find_first_of(".:") == std::string::npos && r.host != "localhost") {
        rafs::fail("image '{}': '{}' is not a registry host (no '.' or ':', not localhost)", text, r.host);
    }
    return r;
}

ImageReference ImageReference::ofArgument(std::string_view text) {
    try {
        return parseTyped(text);
    } catch (const rafs::Error& e) {
        rafs::fail("{}: no such file, and not an image reference ({})", text, e.what());
    }
}

ImageReference ImageReference::parse(std::string_view text) {
    ImageReference r;
    if (text.starts_with("oci:")) {
        r.kind = Kind::Layout;
        std::string_view rest = text.substr(4);
        // oci:DIR:TAG; a ':' inside DIR is not supported (neither is it by skopeo's oci: transport).
        const size_t colon = rest.find(':');
        r.layout_dir = std::string(rest.substr(0, colon));
        r.tag_defaulted = colon == std::string_view::npos;
        r.tag = r.tag_defaulted ? "latest" : std::string(rest.substr(colon + 1));
        if (r.layout_dir.empty()) rafs::fail("image '{}': oci: needs a directory, as in oci:DIR[:TAG]", text);
        if (r.tag.empty() || r.tag.find('/') != std::string::npos) rafs::fail("image '{}': bad tag '{}'", text, r.tag);
        return r;
    }
    const size_t slash = text.find('/');
    if (slash == std::string_view::npos) {
        rafs::fail("image '{}': expected HOST[:PORT]/REPOSITORY[:TAG|@DIGEST] or oci:DIR[:TAG]", text);
    }
    r.host = std::string(text.substr(0, slash));
    if (!std::regex_match(r.host, hostPattern())) rafs::fail("image '{}': '{}' is not a host[:port]", text, r.host);
    std::string rest(text.substr(slash + 1));
    if (const size_t at = rest.find('@'); at != std::string::npos) {
        r.digest = rest.substr(at + 1);
        checkDigest(r.digest, fmt::format("image '{}'", text));
        rest.resize(at);
    }
    if (const size_t colon = rest.rfind(':'); colon != std::string::npos && rest.find('/', colon) == std::string::npos) {
        r.tag = rest.substr(colon + 1);
        rest.resize(colon);
        if (!std::regex_match(r.tag, tagPattern())) rafs::fail("image '{}': '{}' is not a valid tag", text, r.tag);
    }
    if (r.tag.empty() && r.digest.empty()) {
        r.tag = "latest";
        r.tag_defaulted = true;
    }
    if (!std::regex_match(rest, repositoryPattern())) {
        rafs::fail("image '{}': '{}' is not a repository name (lowercase letters, digits, separators)", text, rest);
    }
    r.repository = rest;
    return r;
}

std::string ImageReference::str() const {
    if (kind == Kind::Layout) return "oci:" + layout_dir + ":" + tag;
    std::string out = host + "/" + repository;
    if (!tag.empty() && (digest.empty() || tag != "latest")) out += ":" + tag;
    if (!digest.empty()) out += "@" + digest;
    return out;
}

}  // namespace registry
