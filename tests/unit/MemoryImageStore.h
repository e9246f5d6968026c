// Test aids of the image tests: an ImageStore in memory (manifests by tag and digest, blobs by
// digest) that counts what is asked of it, and tar archives made with libarchive.
#pragma once

#include "format/Error.h"
#include "registry/ImageStore.h"
#include "registry/OciImage.h"

#include <archive.h>
#include <archive_entry.h>
#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace rafs::test {

class MemoryImageStore : public registry::ImageStore {
public:
    // Stores `doc` under its digest and `tag` (if not empty); returns its descriptor.
    registry::Descriptor putDocument(const std::string& tag, std::string_view media_type, const std::string& doc) {
        const std::string digest = registry::sha256Digest(doc);
        manifests_[digest] = {std::string(media_type), digest, doc};
        if (!tag.empty()) manifests_[tag] = manifests_[digest];
        return {std::string(media_type), digest, doc.size(), {}, {}, {}};
    }
    registry::Descriptor putBlob(std::string_view media_type, const std::vector<uint8_t>& bytes) {
        const std::string digest = registry::sha256Digest({reinterpret_cast<const char*>(bytes.data()), bytes.size()});
        blobs_[digest] = bytes;
        return {std::string(media_type), digest, bytes.size(), {}, {}, {}};
    }

    registry::FetchedManifest manifest(const std::string& reference) override {
        ++manifest_gets;
        const auto it = manifests_.find(reference);
        if (it == manifests_.end()) rafs::fail("mem/{}: no such manifest (unknown tag or digest)", reference);
        return it->second;
    }
    uint64_t blobSize(const std::string& digest) override { return blob(digest).size(); }
    void readBlob(const std::string& digest, uint64_t offset, std::span<uint8_t> out) override {
        ++blob_reads;
        const std::vector<uint8_t>& b = blob(digest);
        if (offset + out.size() > b.size()) rafs::fail("mem: {} is shorter than {}", digest, offset + out.size());
        std::memcpy(out.data(), b.data() + offset, out.size());
        if (serving < damaged && !out.empty()) out[0] ^= 0xff;
    }
    // Servers, for reads again elsewhere: reads go to server `serving`, and the first `damaged`
    // of them serve each piece with its first byte flipped.
    size_t server_count = 1;
    size_t damaged = 0;
    size_t serving = 0;
    size_t servers() const override { return server_count; }
    std::string distrustServer() override { return "mem://server-" + std::to_string(serving++); }
    bool hasBlob(const std::string& digest) override { return blobs_.contains(digest); }
    // Read-only: the tests that use it resolve and fetch images, they never push.
    void pushBlob(const std::string& digest, registry::RequestBody&) override { rafs::fail("mem: read-only ({})", digest); }
    bool mountBlob(const std::string&, const std::string&) override { return false; }
    void putManifest(const std::string& tag, std::string_view, const std::string&) override {
        rafs::fail("mem: read-only ({})", tag);
    }
    std::string describe() const override { return "mem"; }

    int manifest_gets = 0;
    int blob_reads = 0;

private:
    const std::vector<uint8_t>& blob(const std::string& digest) {
        const auto it = blobs_.find(digest);
        if (it == blobs_.end()) rafs::fail("mem: no blob {}", digest);
        return it->second;
    }

    std::map<std::string, registry::FetchedManifest> manifests_;
    std::map<std::string, std::vector<uint8_t>> blobs_;
};

// A tar (gzip-compressed if `gzip`) of regular files {path, content}.
inline std::vector<uint8_t> tarOf(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& files, bool gzip) {
    std::vector<uint8_t> out(1 << 20);
    size_t used = 0;
    archive* a = archive_write_new();
    REQUIRE(archive_write_set_format_pax_restricted(a) == ARCHIVE_OK);
    if (gzip) REQUIRE(archive_write_add_filter_gzip(a) == ARCHIVE_OK);
    REQUIRE(archive_write_open_memory(a, out.data(), out.size(), &used) == ARCHIVE_OK);
    for (const auto& [path, content] : files) {
        archive_entry* e = archive_entry_new();
        archive_entry_set_pathname(e, path.c_str());
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0444);
        archive_entry_set_size(e, static_cast<la_int64_t>(content.size()));
        REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
        REQUIRE(archive_write_data(a, content.data(), content.size()) == static_cast<la_ssize_t>(content.size()));
        archive_entry_free(e);
    }
    REQUIRE(archive_write_close(a) == ARCHIVE_OK);
    archive_write_free(a);
    out.resize(used);
    return out;
}

}  // namespace rafs::test
