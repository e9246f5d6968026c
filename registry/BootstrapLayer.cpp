#include "registry/BootstrapLayer.h"

#include "format/Error.h"
#include "format/FileIo.h"

#include <archive.h>
#include <archive_entry.h>

#include <memory>
#include <zlib.h>

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

struct ArchiveWriteFree {
    void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFree {
    void operator()(archive_entry* e) const { archive_entry_free(e); }
};

la_ssize_t appendTo(archive*, void* out, const void* data, size_t size) {
    static_cast<std::string*>(out)->append(static_cast<const char*>(data), size);
    return static_cast<la_ssize_t>(size);
}

void checkWrite(archive* a, int rc, const char* what) {
    if (rc != ARCHIVE_OK) rafs::fail("bootstrap layer: {}: {}", what, archive_error_string(a) ? archive_error_string(a) : "failed");
}

std::string tarOf(const std::string& boot) {
    std::string tar;
    std::unique_ptr<archive, ArchiveWriteFree> writer(archive_write_new());
    archive* a = writer.get();
    if (a == nullptr) rafs::fail("bootstrap layer: cannot create a tar writer");
    checkWrite(a, archive_write_set_format_ustar(a), "ustar format");
    // Whole 10 KiB records, as tar writes them.
    checkWrite(a, archive_write_open(a, &tar, nullptr, appendTo, nullptr), "open");
    auto add = [&](const char* path, mode_t mode, const std::string* content) {
        std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
        archive_entry_set_pathname(e.get(), path);
        archive_entry_set_mode(e.get(), mode);
        archive_entry_set_uid(e.get(), 0);
        archive_entry_set_gid(e.get(), 0);
        archive_entry_set_mtime(e.get(), 0, 0);
        archive_entry_set_size(e.get(), content ? static_cast<la_int64_t>(content->size()) : 0);
        checkWrite(a, archive_write_header(a, e.get()), path);
        if (content && archive_write_data(a, content->data(), content->size()) != static_cast<la_ssize_t>(content->size())) {
            rafs::fail("bootstrap layer: writing {}: {}", path, archive_error_string(a) ? archive_error_string(a) : "failed");
        }
    };
    add("image/", S_IFDIR | 0755, nullptr);
    add("image/image.boot", S_IFREG | 0444, &boot);
    checkWrite(a, archive_write_close(a), "close");
    return tar;
}

std::string gzipOf(const std::string& data) {
    z_stream zs{};
    // windowBits 15 + 16: a gzip wrapper whose header has mtime 0 and no name.
    if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) rafs::fail("bootstrap layer: zlib init failed");
    std::string out(deflateBound(&zs, data.size()), '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs.avail_in = static_cast<uInt>(data.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&zs, Z_FINISH);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) rafs::fail("bootstrap layer: gzip failed");
    return out;
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
    const std::vector<uint8_t> bytes =
        readVerifiedBlob(store, layer, kMaxBootstrapLayerSize, fmt::format("{}: bootstrap layer", name));
    return bootstrapFromLayer(bytes, fmt::format("{} (layer {})", name, layer.digest));
}

BootstrapLayerBlob makeBootstrapLayer(const std::filesystem::path& bootstrap) {
    const std::string boot = rafs::readFile(bootstrap);
    if (boot.size() > UINT32_MAX) rafs::fail("{}: a bootstrap over 4 GiB", bootstrap.string());
    BootstrapLayerBlob layer;
    const std::string tar = tarOf(boot);
    layer.tar_digest = sha256Digest(tar);
    layer.gzip = gzipOf(tar);
    layer.digest = sha256Digest(layer.gzip);
    return layer;
}

}  // namespace registry
