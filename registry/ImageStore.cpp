#include "registry/ImageStore.h"

#include "format/Digest.h"
#include "format/Error.h"
#include "format/FileIo.h"
#include "registry/OciImage.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <fstream>
#include <unistd.h>

namespace fs = std::filesystem;

namespace registry {

void RegistryStore::putManifest(const std::string& tag, std::string_view media_type, const std::string& bytes) {
    client_->putManifest(tag.empty() ? sha256Digest(bytes) : tag, media_type, bytes);
}

namespace {

// A name beside `path` that no other writer, thread or process, uses at the same time.
fs::path tempBeside(const fs::path& path) {
    static std::atomic<uint64_t> next{0};
    return fmt::format("{}.tmp-{}-{}", path.string(), ::getpid(), next.fetch_add(1));
}

// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
void replaceFile(const fs::path& path, std::string_view bytes) {
    const fs::path tmp = tempBeside(path);
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        out.flush();
        if (!out) {
            std::error_code ignored;
            fs::remove(tmp, ignored);
            rafs::failErrno("writing " + tmp.string());
        }
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        std::error_code ignored;
        fs::remove(tmp, ignored);
        rafs::fail("cannot rename {} to {}: {}", tmp.string(), path.string(), ec.message());
    }
}

}  // namespace

OciLayoutStore::OciLayoutStore(fs::path dir, bool create, LayoutFileCreated on_create, bool sole_as_latest)
    : dir_(std::move(dir)), on_create_(std::move(on_create)), sole_as_latest_(sole_as_latest) {
    std::error_code ec;
    if (!fs::exists(dir_ / "oci-layout", ec)) {
        if (!create) rafs::fail("oci:{}: not an OCI image layout (no oci-layout file)", dir_.string());
        fs::create_directories(dir_ / "blobs" / "sha256", ec);
        if (ec) rafs::fail("oci:{}: cannot create: {}", dir_.string(), ec.message());
        replaceFile(dir_ / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
        if (!fs::exists(dir_ / "index.json", ec)) replaceFile(dir_ / "index.json", Index{std::string(media::kOciIndex), {}, {}}.serialize());
    }
}

fs::path OciLayoutStore::blobPath(const std::string& digest) const {
    checkDigest(digest, describe());
    return dir_ / "blobs" / "sha256" / digest.substr(7);
}

FetchedManifest OciLayoutStore::manifest(const std::string& reference) {
    const std::string where = describe() + "/index.json";
    const Index index = Index::parse(rafs::readFile(dir_ / "index.json"), "", where);
    const Descriptor* found = nullptr;
    for (const Descriptor& d : index.manifests) {
        if (reference.starts_with("sha256:") ? d.digest == reference : d.hasAnnotation(annotation::kRefName, reference)) {
            // Tools disagree on which of two to take (skopeo the first, umoci neither): none is.
            if (found != nullptr && found->digest != d.digest) {
                rafs::fail("{}:{}: ambiguous: index.json gives this tag to {} and {}", describe(), reference,
                           found->digest, d.digest);
            }
            found = &d;
        }
    }
    if (found == nullptr && sole_as_latest_ && reference == "latest" && index.manifests.size() == 1 &&
        !index.manifests[0].annotations.contains(annotation::kRefName)) {
        found = &index.manifests[0];
    }
    // A manifest by digest may be a blob only: an index in the layout names the manifests of each
    // platform, and only the index is in index.json (skopeo copy --all, and mkrafs convert
    // --all-platforms or --merge-index write such layouts).
    const bool by_digest = reference.starts_with("sha256:");
    std::error_code ec;
    if (found == nullptr && (!by_digest || !fs::exists(blobPath(reference), ec))) {
        rafs::fail("{}:{}: no such manifest in index.json", describe(), reference);
    }
    const std::string digest = found != nullptr ? found->digest : reference;
    FetchedManifest out;
    out.bytes = rafs::readFile(blobPath(digest));
    out.digest = sha256Digest(out.bytes);
    if (out.digest != digest) {
        rafs::fail("{}: blob {} does not match its digest (it is {})", describe(), digest, out.digest);
    }
    if (found != nullptr && found->size != out.bytes.size()) {
        rafs::fail("{}: index.json gives manifest {} a size of {} bytes; it has {}", describe(), digest, found->size,
                   out.bytes.size());
    }
    // Not named in index.json: the document says what it is (ImageResolver's documentType).
    if (found != nullptr) out.media_type = found->media_type;
    return out;
}

uint64_t OciLayoutStore::blobSize(const std::string& digest) {
    std::error_code ec;
    const uint64_t size = fs::file_size(blobPath(digest), ec);
    if (ec) rafs::fail("{}: blob {}: {}", describe(), digest, ec.message());
    return size;
}

void OciLayoutStore::readBlob(const std::string& digest, uint64_t offset, std::span<uint8_t> out) {
    std::ifstream in(blobPath(digest), std::ios::binary);
    if (!in) rafs::failErrno(fmt::format("{}: cannot open blob {}", describe(), digest));
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
    if (static_cast<size_t>(in.gcount()) != out.size()) {
        rafs::fail("{}: blob {} ends before byte {}", describe(), digest, offset + out.size());
    }
}

// A registry checks what it stores; a layout's files can be damaged or cut short since (an earlier
// run killed, a disk that filled up, a hand that truncated one): a blob is there only if its
// bytes have its digest, else it is written again. Hashing costs a read of each blob kept.
bool OciLayoutStore::hasBlob(const std::string& digest) {
    std::ifstream in(blobPath(digest), std::ios::binary);
    if (!in) return false;
    rafs::Hasher hasher(rafs::Digester::Sha256);
    std::vector<char> buffer(1 << 20);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
        hasher.update({reinterpret_cast<const uint8_t*>(buffer.data()), static_cast<size_t>(in.gcount())});
    }
    if (in.bad()) rafs::failErrno(fmt::format("{}: cannot read blob {}", describe(), digest));
    return "sha256:" + rafs::toHex(hasher.finish()) == digest;
}

void OciLayoutStore::writeBlob(const std::string& digest, RequestBody& body) {
    const fs::path path = blobPath(digest);
    const fs::path tmp = tempBeside(path);
    if (on_create_) {
        on_create_(tmp);
        on_create_(path);
    }
    rafs::Hasher hasher(rafs::Digester::Sha256);
    try {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        std::vector<uint8_t> buffer(1 << 20);
        body.rewind();
        while (size_t n = body.read(buffer)) {
            hasher.update({buffer.data(), n});
            out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(n));
        }
        out.flush();
        if (!out) rafs::failErrno("writing " + tmp.string());
        if ("sha256:" + rafs::toHex(hasher.finish()) != digest) {
            rafs::fail("{}: the data written as {} has another digest", describe(), digest);
        }
    } catch (...) {
        // Also when the body fails: no temporary file is left in the layout.
        std::error_code ignored;
        fs::remove(tmp, ignored);
        throw;
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) rafs::fail("cannot rename {} to {}: {}", tmp.string(), path.string(), ec.message());
}

void OciLayoutStore::pushBlob(const std::string& digest, RequestBody& body) {
    if (!hasBlob(digest)) writeBlob(digest, body);
}

void OciLayoutStore::putManifest(const std::string& tag, std::string_view media_type, const std::string& bytes) {
    const std::string digest = sha256Digest(bytes);
    BytesBody body(bytes);
    pushBlob(digest, body);
    if (tag.empty()) return;
    // Edited, not rewritten from what Index keeps: the other images' entries and the index's own
    // fields stay as they were, also those Descriptor does not know (urls, platform.os.version).
    const std::string text = rafs::readFile(dir_ / "index.json");
    const Index index = Index::parse(text, "", describe() + "/index.json");
    nlohmann::json document = nlohmann::json::parse(text);
    nlohmann::json entries = nlohmann::json::array();
    for (size_t i = 0; i < index.manifests.size(); ++i) {
        if (!index.manifests[i].hasAnnotation(annotation::kRefName, tag)) entries.push_back(document["manifests"][i]);
    }
    Descriptor d;
    d.media_type = std::string(media_type);
    d.digest = digest;
    d.size = bytes.size();
    d.annotations[annotation::kRefName] = tag;
    entries.push_back(d.toJson());
    document["manifests"] = std::move(entries);
    replaceFile(dir_ / "index.json", document.dump());
}

namespace {

// In pieces: each request is bounded by the transport's timeout, so a large blob (a bootstrap
// layer of tens of MB) on a slow link is fetched piece by piece rather than never. Each piece is
// read into buffer(at, size), handed to take(), and the whole checked against the blob's digest.
constexpr uint64_t kPiece = 4 << 20;

// Read bytes that are not the blob: another server may have it right.
class DigestMismatch : public rafs::Error {
public:
    using rafs::Error::Error;
};

void readCheckedPieces(ImageStore& store, const Descriptor& blob, std::string_view what,
                       const std::function<std::span<uint8_t>(uint64_t at, size_t size)>& buffer,
                       const std::function<void(std::span<const uint8_t>)>& take) {
    rafs::Hasher hash(rafs::Digester::Sha256);
    for (uint64_t at = 0; at < blob.size; at += kPiece) {
        const std::span<uint8_t> part = buffer(at, static_cast<size_t>(std::min(kPiece, blob.size - at)));
        store.readBlob(blob.digest, at, part);
        hash.update(part);
        take(part);
    }
    const std::string actual = "sha256:" + rafs::toHex(hash.finish());
    if (actual != blob.digest) {
        throw DigestMismatch(fmt::format("{} {}: digest mismatch: its bytes hash to {}", what, blob.digest, actual));
    }
}

}  // namespace

void readBlobInPieces(ImageStore& store, const Descriptor& blob, std::string_view what,
                      const std::function<void(std::span<const uint8_t>)>& take) {
    std::vector<uint8_t> piece(static_cast<size_t>(std::min(kPiece, blob.size)));
    readCheckedPieces(
        store, blob, what, [&](uint64_t, size_t size) { return std::span(piece).first(size); }, take);
}

std::vector<uint8_t> readVerifiedBlob(ImageStore& store, const Descriptor& blob, uint64_t max_size,
                                      std::string_view what) {
    if (blob.size == 0 || blob.size > max_size) {
        rafs::fail("{} {} has size {} (expected 1 to {} bytes)", what, blob.digest, blob.size, max_size);
    }
    // Read in place: no piece buffer to copy out of.
    std::vector<uint8_t> bytes(static_cast<size_t>(blob.size));
    std::vector<std::string> distrusted;
    for (;;) {
        try {
            readCheckedPieces(
                store, blob, what, [&](uint64_t at, size_t size) { return std::span(bytes).subspan(at, size); },
                [](std::span<const uint8_t>) {});
            return bytes;
        } catch (const DigestMismatch& e) {
            if (distrusted.size() + 1 >= store.servers()) {
                if (distrusted.empty()) throw;
                rafs::fail("{} (as did the copy from {})", e.what(), fmt::join(distrusted, ", "));
            }
            distrusted.push_back(store.distrustServer());
        }
    }
}

std::unique_ptr<ImageStore> openStore(
    const ImageReference& ref, bool create,
    const std::function<std::shared_ptr<RegistryClient>(const ImageReference&)>& client_for,
    LayoutFileCreated on_create) {
    if (ref.kind == ImageReference::Kind::Layout) {
        return std::make_unique<OciLayoutStore>(ref.layout_dir, create, std::move(on_create), ref.tag_defaulted);
    }
    return std::make_unique<RegistryStore>(client_for(ref));
}

}  // namespace registry
