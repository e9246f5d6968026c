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
    // As parse(), for a reference a user typed: the host must be one by Docker's rule (a '.' or
    // ':', or localhost), since a dotless first component is a mistyped path or a Docker Hub name.
    // References rafsd stored (mount tables, layer stores) go through parse(): an earlier rafsd
    // wrote them without this rule.
    static ImageReference parseTyped(std::string_view text);
    // A command-line argument that is no existing file, read as an image reference
    // (parseTyped); else an error saying it is neither.
    static ImageReference ofArgument(std::string_view text);
    // Whether `text` reads as a registry reference or a layout (a cheap test, no exception).
    static bool looksLikeReference(std::string_view text);

    // What to ask the registry or layout for: the digest if given, else the tag.
    const std::string& reference() const { return digest.empty() ? tag : digest; }
    std::string str() const;
};

}  // namespace registry
