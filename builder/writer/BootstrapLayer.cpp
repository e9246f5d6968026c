#include "builder/writer/BootstrapLayer.h"

#include "format/Error.h"
#include "registry/OciImage.h"

#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>

#include <fstream>
#include <memory>

namespace rafs::build {

namespace {

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

void check(archive* a, int rc, const char* what) {
    if (rc != ARCHIVE_OK) fail("bootstrap layer: {}: {}", what, archive_error_string(a) ? archive_error_string(a) : "failed");
}

std::string tarOf(const std::string& boot) {
    std::string tar;
    std::unique_ptr<archive, ArchiveWriteFree> writer(archive_write_new());
    archive* a = writer.get();
    if (a == nullptr) fail("bootstrap layer: cannot create a tar writer");
    check(a, archive_write_set_format_ustar(a), "ustar format");
    // Whole 10 KiB records, as tar writes them.
    check(a, archive_write_open(a, &tar, nullptr, appendTo, nullptr), "open");
    auto add = [&](const char* path, mode_t mode, const std::string* content) {
        std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
        archive_entry_set_pathname(e.get(), path);
        archive_entry_set_mode(e.get(), mode);
        archive_entry_set_uid(e.get(), 0);
        archive_entry_set_gid(e.get(), 0);
        archive_entry_set_mtime(e.get(), 0, 0);
        archive_entry_set_size(e.get(), content ? static_cast<la_int64_t>(content->size()) : 0);
        check(a, archive_write_header(a, e.get()), path);
        if (content && archive_write_data(a, content->data(), content->size()) != static_cast<la_ssize_t>(content->size())) {
            fail("bootstrap layer: writing {}: {}", path, archive_error_string(a) ? archive_error_string(a) : "failed");
        }
    };
    add("image/", S_IFDIR | 0755, nullptr);
    add("image/image.boot", S_IFREG | 0444, &boot);
    check(a, archive_write_close(a), "close");
    return tar;
}

std::string gzipOf(const std::string& data) {
    z_stream zs{};
    // windowBits 15 + 16: a gzip wrapper whose header has mtime 0 and no name.
    if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) fail("bootstrap layer: zlib init failed");
    std::string out(deflateBound(&zs, data.size()), '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs.avail_in = static_cast<uInt>(data.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&zs, Z_FINISH);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) fail("bootstrap layer: gzip failed");
    return out;
}

}  // namespace

BootstrapLayer makeBootstrapLayer(const std::filesystem::path& bootstrap) {
    std::ifstream in(bootstrap, std::ios::binary);
    if (!in) failErrno("cannot open " + bootstrap.string());
    const std::string boot((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) failErrno("reading " + bootstrap.string());
    if (boot.size() > UINT32_MAX) fail("{}: a bootstrap over 4 GiB", bootstrap.string());
    BootstrapLayer layer;
    const std::string tar = tarOf(boot);
    layer.tar_digest = registry::sha256Digest(tar);
    layer.gzip = gzipOf(tar);
    layer.digest = registry::sha256Digest(layer.gzip);
    return layer;
}

}  // namespace rafs::build
