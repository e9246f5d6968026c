// Where images are read from and written to, whether a registry's repository or an OCI image
// layout directory: manifests by tag or digest, blobs by digest. mkrafs convert reads one and
// writes the other through this; rafsd resolves images through it.
#pragma once

#include "registry/ImageReference.h"
#include "registry/OciImage.h"
#include "registry/RegistryClient.h"
#include "registry/RequestBody.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <functional>
#include <string>

namespace registry {

class ImageStore {
public:
    virtual ~ImageStore() = default;

    // A tag or "sha256:..."; throws rafs::Error naming the image when it has no such manifest.
    virtual FetchedManifest manifest(const std::string& reference) = 0;
    virtual uint64_t blobSize(const std::string& digest) = 0;
    // Exactly out.size() bytes at `offset`.
    virtual void readBlob(const std::string& digest, uint64_t offset, std::span<uint8_t> out) = 0;
    virtual bool hasBlob(const std::string& digest) = 0;
    virtual void pushBlob(const std::string& digest, RequestBody& body) = 0;
    // Takes the blob from repository `from` of the same registry without sending it; false if
    // that is not possible (and always for a layout).
    virtual bool mountBlob(const std::string& digest, const std::string& from) = 0;
    // Stores a manifest or index under its digest and, when `tag` is not empty, names it `tag`.
    virtual void putManifest(const std::string& tag, std::string_view media_type, const std::string& bytes) = 0;
    // For messages: "host:port/repo" or "oci:DIR".
    virtual std::string describe() const = 0;
    // How many servers a blob read may go to: a registry's mirrors and the registry itself.
    virtual size_t servers() const { return 1; }
    // The server blob reads go to first served bytes that failed their digest: it is skipped for a
    // while, so that the next read goes to the next one. Returns its URL, for messages.
    virtual std::string distrustServer() { return {}; }
};

class RegistryStore : public ImageStore {
public:
    explicit RegistryStore(std::shared_ptr<RegistryClient> client) : client_(std::move(client)) {}
    FetchedManifest manifest(const std::string& reference) override { return client_->fetchManifest(reference); }
    uint64_t blobSize(const std::string& digest) override { return client_->blobSize(digest); }
    void readBlob(const std::string& digest, uint64_t offset, std::span<uint8_t> out) override {
        client_->readBlob(digest, offset, out);
    }
    bool hasBlob(const std::string& digest) override { return client_->hasBlob(digest); }
    void pushBlob(const std::string& digest, RequestBody& body) override { client_->pushBlob(digest, body); }
    bool mountBlob(const std::string& digest, const std::string& from) override {
        return client_->mountBlob(digest, from);
    }
    void putManifest(const std::string& tag, std::string_view media_type, const std::string& bytes) override;
    std::string describe() const override { return client_->options().host + "/" + client_->options().repository; }
    size_t servers() const override { return client_->endpointCount(); }
    std::string distrustServer() override { return client_->distrustPreferredEndpoint(); }
    RegistryClient& client() { return *client_; }

private:
    std::shared_ptr<RegistryClient> client_;
};

// Told of each path a blob write is about to create in a layout (its temporary file, then the
// blob), before it exists: a writer that must leave an existing layout as it found it when it
// fails removes them.
using LayoutFileCreated = std::function<void(const std::filesystem::path&)>;

// An OCI image layout (image-spec image-layout.md): DIR/oci-layout, DIR/index.json naming
// manifests by the org.opencontainers.image.ref.name annotation, DIR/blobs/sha256/<hex>. Blobs
// are written to a temporary file and renamed; index.json is replaced whole, so readers never see
// half a file. One writer at a time: a writer holds the layout's LayoutLock (LayoutLock.h).
class OciLayoutStore : public ImageStore {
public:
    // `create`: make DIR a layout if it does not exist (a target); else it must be one.
    // `sole_as_latest`: the reference named no tag (oci:DIR), so "latest" also finds the layout's
    // one manifest when index.json holds only that one, untagged, as skopeo and the image-spec's
    // tools read it (`skopeo copy ... oci:DIR` writes it so).
    OciLayoutStore(std::filesystem::path dir, bool create, LayoutFileCreated on_create = {}, bool sole_as_latest = false);
    FetchedManifest manifest(const std::string& reference) override;
    uint64_t blobSize(const std::string& digest) override;
    void readBlob(const std::string& digest, uint64_t offset, std::span<uint8_t> out) override;
    bool hasBlob(const std::string& digest) override;
    void pushBlob(const std::string& digest, RequestBody& body) override;
    bool mountBlob(const std::string&, const std::string&) override { return false; }
    void putManifest(const std::string& tag, std::string_view media_type, const std::string& bytes) override;
    std::string describe() const override { return "oci:" + dir_.string(); }

private:
    std::filesystem::path blobPath(const std::string& digest) const;
    void writeBlob(const std::string& digest, RequestBody& body);

    std::filesystem::path dir_;
    LayoutFileCreated on_create_;
    bool sole_as_latest_;
};

// The blob `blob` describes, handed to `take` in pieces of 4 MiB in order, then its digest checked
// (a caller keeping the pieces must not trust them before this returns). Throws rafs::Error
// "<what> <digest>: digest mismatch ..." or what reading throws.
void readBlobInPieces(ImageStore& store, const Descriptor& blob, std::string_view what,
                      const std::function<void(std::span<const uint8_t>)>& take);

// The whole blob `blob` describes, read in pieces of 4 MiB, checked against its digest; at most
// `max_size` bytes. Bytes that fail the digest are read again from the store's next server (a
// mirror's damaged copy is not the blob), once per server. Throws rafs::Error "<what> <digest>:
// ..." for a size out of range or a digest mismatch on every server.
std::vector<uint8_t> readVerifiedBlob(ImageStore& store, const Descriptor& blob, uint64_t max_size,
                                      std::string_view what);

// The store an ImageReference names. Registries get `client_for(host, repository)`; a layout
// reports the files it creates to `on_create`.
std::unique_ptr<ImageStore> openStore(
    const ImageReference& ref, bool create,
    const std::function<std::shared_ptr<RegistryClient>(const ImageReference&)>& client_for,
    LayoutFileCreated on_create = {});

}  // namespace registry
