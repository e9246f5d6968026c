#include "registry/BootstrapLayer.h"

#include "format/Error.h"

#include <archive.h>
#include <archive_entry.h>

#include <memory>

namespace registry {

namespace {

struct ArchiveFree {
    void operator()(archive* a) const { archive_read_free(a); }
};

std::string archiveError(archive* a) {
    const char* text = archive_error_string(a);
    return text != nullptr ? text : "unknown libarchive error";
}

// "./image/image.boot" names the same member as "image/image.boot".
std::string_view memberPath(const char* raw) {
    std::string_view path = raw != nullptr ? raw : "";
    while (path.starts_with("./")) path.remove_prefix(2);
    return path;
}

}  // namespace

void checkBootstrapLayerType(const Descriptor& layer, std::string_view name) {
    const std::string& type = layer.media_type;
    if (type == media::kOciLayer || type == media::kOciLayerGzip || type == media::kDockerLayerGzip) return;
    rafs::fail("{}: bootstrap layer {} has media type {}, which rafs does not handle (expected a tar or tar+gzip)", name,
               layer.digest, type);
}

std::vector<uint8_t> bootstrapFromLayer(std::span<const uint8_t> layer, std::string_view name) {
    std::unique_ptr<archive, ArchiveFree> owner(archive_read_new());
    archive* a = owner.get();
    if (a == nullptr) rafs::fail("{}: cannot create a libarchive reader", name);
    // gzip or nothing: libarchive recognises the compression by its magic; a tar whose gzip does
    // not decode fails at the first header or data block.
    if (archive_read_support_filter_gzip(a) < ARCHIVE_WARN || archive_read_support_format_tar(a) != ARCHIVE_OK) {
        rafs::fail("{}: cannot set up libarchive: {}", name, archiveError(a));
    }
    if (archive_read_open_memory(a, layer.data(), layer.size()) != ARCHIVE_OK) {
        rafs::fail("{}: the bootstrap layer is not a tar (plain or gzip): {}", name, archiveError(a));
    }
    for (;;) {
        archive_entry* entry = nullptr;
        const int r = archive_read_next_header(a, &entry);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) rafs::fail("{}: the bootstrap layer is not a readable tar: {}", name, archiveError(a));
        if (memberPath(archive_entry_pathname(entry)) != kBootstrapLayerPath) continue;
        if (archive_entry_filetype(entry) != AE_IFREG) {
            rafs::fail("{}: {} in the bootstrap layer is not a regular file", name, kBootstrapLayerPath);
        }
        const la_int64_t size = archive_entry_size(entry);
        if (size <= 0 || static_cast<uint64_t>(size) > kMaxBootstrapSize) {
            rafs::fail("{}: {} in the bootstrap layer has size {} (expected 1 to {} bytes)", name, kBootstrapLayerPath,
                       size, kMaxBootstrapSize);
        }
        std::vector<uint8_t> out(static_cast<size_t>(size));
        size_t done = 0;
        while (done < out.size()) {
            const la_ssize_t n = archive_read_data(a, out.data() + done, out.size() - done);
            if (n < 0) rafs::fail("{}: reading {} from the bootstrap layer: {}", name, kBootstrapLayerPath, archiveError(a));
            if (n == 0) break;
            done += static_cast<size_t>(n);
        }
        if (done != out.size()) {
            rafs::fail("{}: {} in the bootstrap layer is truncated ({} of {} bytes)", name, kBootstrapLayerPath, done,
                       out.size());
        }
        return out;
    }
    rafs::fail("{}: the bootstrap layer has no {}", name, kBootstrapLayerPath);
}

std::vector<uint8_t> fetchBootstrapLayer(ImageStore& store, const Descriptor& layer, std::string_view name) {
    checkBootstrapLayerType(layer, name);
    if (layer.size == 0 || layer.size > kMaxBootstrapLayerSize) {
        rafs::fail("{}: bootstrap layer {} has size {} (expected 1 to {} bytes)", name, layer.digest, layer.size,
                   kMaxBootstrapLayerSize);
    }
    std::vector<uint8_t> bytes(layer.size);
    store.readBlob(layer.digest, 0, bytes);
    const std::string actual = sha256Digest({reinterpret_cast<const char*>(bytes.data()), bytes.size()});
    if (actual != layer.digest) {
        rafs::fail("{}: bootstrap layer {}: digest mismatch: its bytes hash to {}", name, layer.digest, actual);
    }
    return bootstrapFromLayer(bytes, fmt::format("{} (layer {})", name, layer.digest));
}

}  // namespace registry
