#include "builder/commands/Inspect.h"

#include "format/BlobFile.h"
#include "format/BootstrapCheck.h"
#include "format/ByteView.h"
#include "format/Codec.h"
#include "format/Error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <optional>

namespace rafs::build {

namespace {

constexpr uint64_t kHashBlock = 1 << 20;  // streaming granularity for hashing large sections

std::string flagNames(uint64_t flags) {
    static constexpr std::pair<uint64_t, const char*> kNames[] = {
        {kFlagCompressionNone, "none"},     {kFlagCompressionLz4, "lz4_block"},
        {kFlagCompressionGzip, "gzip"},     {kFlagCompressionZstd, "zstd"},
        {kFlagHashBlake3, "blake3"},        {kFlagHashSha256, "sha256"},
        {kFlagExplicitUidGid, "explicit-uid-gid"}, {kFlagHasXattr, "has-xattr"},
        {kFlagInlinedChunkDigest, "inlined-chunk-digest"}, {kFlagEncryptionNone, "encryption-none"},
    };
    std::string out;
    for (const auto& [bit, name] : kNames) {
        if (flags & bit) out += out.empty() ? name : fmt::format(", {}", name);
    }
    return out;
}

char typeLetter(uint16_t mode) {
    switch (mode & S_IFMT) {
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFCHR: return 'c';
    case S_IFBLK: return 'b';
    case S_IFIFO: return 'p';
    case S_IFSOCK: return 's';
    default: return '-';
    }
}

Digest sha256OfRange(const BlobFile& blob, uint64_t offset, uint64_t size) {
    Hasher h(Digester::Sha256);
    for (uint64_t done = 0; done < size;) {
        const uint64_t n = std::min(kHashBlock, size - done);
        h.update(blob.read(offset + done, n));
        done += n;
    }
    return h.finish();
}

Digest asDigest(const uint8_t (&bytes)[kDigestSize]) {
    Digest d;
    std::copy(std::begin(bytes), std::end(bytes), d.begin());
    return d;
}

void checkToc(const BlobFile& blob, std::ostream& out) {
    for (const TocEntry& e : blob.toc()) {
        const std::string name = tocEntryName(e);
        Digest actual;
        if (name == kTocNameImageBlob) {
            // The ToC digest of the chunk data covers its tar header too (the running blob hash),
            // and 2.2-era Nydus stored a wrong offset: locate the data by its section instead.
            const Section* s = blob.section(kTocNameImageBlob);
            if (s == nullptr) fail("blob {}: ToC lists image.blob but the blob has no such section", blob.id());
            if (e.compressed_size != s->size) {
                fail("blob {}: ToC image.blob size {} differs from the section's {}", blob.id(), e.compressed_size, s->size);
            }
            actual = sha256OfRange(blob, s->offset, s->size + sizeof(TarHeader));
        } else {
            actual = digestOf(Digester::Sha256, blob.extract(e));
        }
        if (actual != asDigest(e.uncompressed_digest)) {
            fail("blob {}: ToC entry '{}' at offset {}: sha256 {} differs from the ToC's {}", blob.id(), name,
                 e.compressed_offset, toHex(actual), toHex(e.uncompressed_digest));
        }
    }
    if (!blob.toc().empty()) {
        const Section& toc = blob.sections().back();
        const Digest expected = asDigest(blob.entry().blob_toc_digest);
        if (expected != Digest{}) {
            const Digest actual = sha256OfRange(blob, toc.offset, toc.size + sizeof(TarHeader));
            if (actual != expected) {
                fail("blob {}: ToC sha256 {} differs from the blob table's {}", blob.id(), toHex(actual), toHex(expected));
            }
        }
        out << fmt::format("  toc: {} entries, digests ok\n", blob.toc().size());
    }
}

// Returns the number of chunks whose digest was checked.
uint64_t checkChunks(const Bootstrap& bootstrap, const BlobFile& blob, std::ostream& out) {
    const Digester digester = digesterFromRaw(blob.entry().digest_algo);
    const std::vector<std::optional<Digest>> expected = expectedChunkDigests(bootstrap, blob);
    std::vector<uint8_t> data;
    uint64_t verified = 0;
    for (size_t i = 0; i < blob.chunks().size(); ++i) {
        const BlobChunk& c = blob.chunks()[i];
        try {
            blob.readChunk(c, data);
        } catch (const Error& err) {
            fail("{} (chunk {})", err.what(), i);
        }
        if (!expected[i]) continue;
        const Digest actual = digestOf(digester, data);
        if (actual != *expected[i]) {
            fail("blob {}: chunk {} at compressed offset {:#x}+{} (uncompressed {:#x}+{}): {} {} differs from {}",
                 blob.id(), i, c.compressed_offset, c.compressed_size, c.uncompressed_offset,
                 c.uncompressed_size, digesterName(digester), toHex(actual), toHex(*expected[i]));
        }
        ++verified;
    }
    out << fmt::format("  chunks: {} decompressed, {} verified against their {} digest\n", blob.chunks().size(),
                       verified, digesterName(digester));
    return verified;
}

void checkBlobSize(const BlobFile& blob) {
    const BlobTableEntry& e = blob.entry();
    // Current builders (blob-toc feature) store the file size; older ones the chunk data size.
    if ((e.features & kBlobHasToc) ? e.compressed_size != blob.fileSize() : e.compressed_size > e.ci_offset) {
        fail("blob {}: file is {} bytes but the blob table's compressed size is {}", blob.id(), blob.fileSize(),
             e.compressed_size);
    }
}

// An on-disk time (seconds, which the kernel reads as signed, and nanoseconds after them) in
// decimal seconds: -2 s + 500000000 ns is -1.500000000.
std::string decimalTime(uint64_t sec, uint32_t nsec) {
    const auto s = static_cast<int64_t>(sec);
    if (s >= 0 || nsec == 0) return fmt::format("{}.{:09}", s, nsec);
    return fmt::format("-{}.{:09}", -(s + 1), 1'000'000'000 - nsec);
}

void printHeader(const Image& image, std::ostream& out) {
    const Bootstrap& b = image.bootstrap;
    const erofs::SuperBlock& sb = b.superBlock();
    const SuperBlockExt& ext = b.extSuperBlock();
    out << fmt::format("bootstrap: {} ({} bytes{})\n", image.path, b.bytes().size(),
                       image.inline_meta ? ", inline in the blob" : "");
    out << fmt::format("superblock: root nid {}, inodes {}, blocks {}, meta_blkaddr {}, extra devices {}, "
                       "build time {}\n",
                       sb.root_nid, sb.inos, sb.blocks, sb.meta_blkaddr, sb.extra_devices,
                       decimalTime(sb.build_time, sb.build_time_nsec));
    out << fmt::format("ext superblock: flags {:#x} ({}), chunk size {:#x}, blob table {}+{}, chunk table {}+{}, "
                       "prefetch table {}+{}\n",
                       ext.s_flags, flagNames(ext.s_flags), ext.s_chunk_size, ext.s_blob_table_offset,
                       ext.s_blob_table_size, ext.s_chunk_table_offset, ext.s_chunk_table_size,
                       ext.s_prefetch_table_offset, ext.s_prefetch_table_size);
    for (const BootstrapBlob& blob : b.blobs()) {
        out << fmt::format("blob {}: {}: {} chunks, {}/{}, features {:#x}, compressed {}, uncompressed {}, "
                           "ci {}+{} ({}, {} raw), toc {}, device blocks {} mapped at {}\n",
                           blob.index, blob.id, blob.chunk_count, compressorName(blob.compressor),
                           digesterName(blob.digester), blob.features, blob.compressed_size,
                           blob.uncompressed_size, blob.ci_offset, blob.ci_compressed_size,
                           compressorName(blob.ci_compressor), blob.ci_uncompressed_size, blob.toc_size,
                           blob.uncompressed_size / erofs::kBlockSize, blob.mapped_blkaddr);
    }
    if (!b.prefetchNids().empty()) {
        out << fmt::format("prefetch: nids {}\n", fmt::join(b.prefetchNids(), " "));
    }
}

void printInode(const Bootstrap& b, const std::string& path, const Inode& ino, std::ostream& out) {
    std::string extra;
    if (ino.isLink()) {
        const std::vector<uint8_t> target = b.readData(ino.nid);
        extra = fmt::format(" -> {}", std::string_view(reinterpret_cast<const char*>(target.data()), target.size()));
    } else if (ino.isDevice()) {
        extra = fmt::format(" (device {}:{})", erofs::devMajor(ino.rdev), erofs::devMinor(ino.rdev));
    }
    out << fmt::format("{}{:04o} {}:{} {:>10} {} nid {} nlink {} {}{}\n", typeLetter(ino.mode),
                       ino.mode & 07777, ino.uid, ino.gid, ino.size, decimalTime(ino.mtime, ino.mtime_nsec), ino.nid,
                       ino.nlink, path, extra);
    for (const auto& [name, value] : ino.xattrs) {
        out << fmt::format("    xattr {} ({} bytes)\n", name, value.size());
    }
    for (const InodeChunk& c : ino.chunks) {
        out << fmt::format("    chunk at {}: blob {} ci {} uncompressed {:#x}+{}\n", c.file_offset, c.blob_index,
                           c.ci_index, c.uncompressed_offset, c.length);
    }
}

}  // namespace

void inspect(const InspectOptions& options, std::ostream& out) {
    const Image image = openImage(options.bootstrap);
    const Bootstrap& b = image.bootstrap;
    printHeader(image, out);

    // The bootstrap on its own first, with the same check and errors as rafsd before a mount.
    if (options.verbose) out << "files:\n";
    const BootstrapSummary summary = checkBootstrap(b, [&](const std::string& path, const Inode& ino) {
        if (options.verbose) printInode(b, path, ino, out);
    });

    std::error_code ec;
    if (!options.blob_dir.empty() && !std::filesystem::is_directory(options.blob_dir, ec)) {
        fail("--blob-dir {}: no such directory", options.blob_dir);
    }
    // No blob there at all: the bootstrap alone is checked (an empty --blob-dir asks for that; one
    // holding other files is a mistyped one, or another image's). Some but not all: the image
    // cannot be checked whole, which is an error.
    std::vector<std::unique_ptr<BlobFile>> blobs(b.blobs().size());
    std::vector<std::string> missing;
    for (uint32_t i = 0; i < blobs.size(); ++i) {
        const std::string path = image.blobPath(i, options.blob_dir);
        if (std::filesystem::exists(path, ec)) blobs[i] = std::make_unique<BlobFile>(path, b.blobs()[i].entry);
        else missing.push_back(path);
    }
    if (!blobs.empty() && missing.size() == blobs.size()) {
        const bool empty_dir = options.blob_dir.empty() || std::filesystem::is_empty(options.blob_dir, ec);
        if (ec) fail("--blob-dir {}: cannot list it: {}", options.blob_dir, ec.message());
        if (!empty_dir) {
            fail("--blob-dir {} holds none of the image's {} blobs (the first: {}), but other files: another "
                 "image's blobs? An empty --blob-dir checks the bootstrap alone",
                 options.blob_dir, blobs.size(), b.blobs()[0].id);
        }
        out << fmt::format("no blob found ({} and the rest): the bootstrap alone was checked\n", missing.front());
    } else if (!missing.empty()) {
        fail("blob {}: not found, though other blobs of the image are there", missing.front());
    }

    // The chunk info table and the chunk indexes (checked against each other above) against the
    // blobs' ci entries.
    for (const ChunkInfo& c : b.chunkInfos()) {
        if (const BlobFile* blob = blobs[c.blob_index].get()) {
            const BlobChunk& ci = blob->chunks()[c.index];
            const bool compressed = (c.flags & kChunkCompressed) != 0;
            if (ci.compressed_offset != c.compressed_offset || ci.compressed_size != c.compressed_size ||
                ci.uncompressed_offset != c.uncompressed_offset || ci.uncompressed_size != c.uncompressed_size ||
                ci.compressed != compressed) {
                fail("{}: chunk table entry for blob {} ci {} ({:#x}+{} -> {:#x}+{}) disagrees with the ci entry "
                     "({:#x}+{} -> {:#x}+{})",
                     b.name(), blob->id(), c.index, c.compressed_offset, c.compressed_size, c.uncompressed_offset,
                     c.uncompressed_size, ci.compressed_offset, ci.compressed_size, ci.uncompressed_offset,
                     ci.uncompressed_size);
            }
        }
    }
    std::vector<std::span<const BlobChunk>> ci_by_blob;
    for (const auto& blob : blobs) ci_by_blob.push_back(blob ? std::span(blob->chunks()) : std::span<const BlobChunk>());
    checkChunkIndexes(b, summary, ci_by_blob);

    uint64_t verified = 0;
    for (const auto& blob : blobs) {
        if (!blob) continue;
        out << fmt::format("checking blob {}: {} ({} bytes)\n", blob->entry().blob_index, blob->path(), blob->fileSize());
        checkBlobSize(*blob);
        verified += checkChunks(b, *blob, out);
        checkToc(*blob, out);
    }
    out << fmt::format("ok: {} inodes, {} chunks verified\n", summary.inodes, verified);
}

}  // namespace rafs::build
