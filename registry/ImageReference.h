// Where an image is: `HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]` in a registry, or `oci:DIR[:TAG]`,
// an OCI image layout (what skopeo, umoci and buildah write). The host is always written out:
// rafs has no default registry.
#pragma once

#include <string>
#include <string_view>

namespace registry {

struct ImageReference {
    enum class Kind { Registry, Layout } kind = Kind::Registry;
    std::string host;        // Registry: "host[:port]"
    std::string repository;  // Registry: "team/app"
    std::string layout_dir;  // Layout: the directory
    std::string tag;         // "latest" when neither tag nor digest is given
    bool tag_defaulted = false;  // that "latest" is assumed, not named
    std::string digest;      // "sha256:<hex>" if given (a reference by digest)

    // Throws rafs::Error saying what is wrong with `text`.
    static ImageReference parse(std::string_view text);
    // Whether `text` reads as a registry reference or a layout (a cheap test, no exception).
    static bool looksLikeReference(std::string_view text);

    // What to ask the registry or layout for: the digest if given, else the tag.
    const std::string& reference() const { return digest.empty() ? tag : digest; }
    std::string str() const;
};

}  // namespace registry
