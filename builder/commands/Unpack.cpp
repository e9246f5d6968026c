#include "builder/commands/Unpack.h"
#include "builder/commands/InterruptCleanup.h"
#include "format/FileIo.h"

#include "format/BlobFile.h"
#include "format/Error.h"
#include "format/UniqueFd.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <locale.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>

namespace rafs::build {

namespace {

// A file created under a temporary name next to its final path; renamed there by commit(),
// removed by the destructor otherwise.
class TempOutput {
public:
    explicit TempOutput(std::filesystem::path final_path) : final_(std::move(final_path)) {
        std::string name = (final_.parent_path() / ("." + final_.filename().string() + ".XXXXXX")).string();
        fd_ = UniqueFd(::mkostemp(name.data(), O_CLOEXEC));
        if (fd_.get() < 0) failErrno(fmt::format("cannot create a temporary file for {}", final_.string()));
        temp_.emplace(name);
    }
    TempOutput(const TempOutput&) = delete;
    TempOutput& operator=(const TempOutput&) = delete;

    int fd() const { return fd_.get(); }
    const std::string& tempPath() const { return temp_->path().native(); }

    void commit() {
        // mkostemp creates 0600; outputs are ordinary readable files.
        if (::fchmod(fd_.get(), 0644) != 0) failErrno(tempPath());
        if (::fsync(fd_.get()) != 0) failErrno(tempPath());
        fd_.close(tempPath());
        if (::rename(tempPath().c_str(), final_.c_str()) != 0) {
            failErrno(fmt::format("cannot rename {} to {}", tempPath(), final_.string()));
        }
        temp_->keep();
    }

private:
    std::filesystem::path final_;
    std::optional<RemovedUnlessKept> temp_;
    UniqueFd fd_;
};

// A blob opened for reading with the digests its chunks must match.
struct OpenBlob {
    std::unique_ptr<BlobFile> file;
    Digester digester = Digester::Blake3;
    std::vector<std::optional<Digest>> expected;

    OpenBlob(const Image& image, uint32_t index, const std::string& blob_dir)
        : file(std::make_unique<BlobFile>(image.blobPath(index, blob_dir), image.bootstrap.blobs()[index].entry)),
          digester(image.bootstrap.blobs()[index].digester),
          expected(expectedChunkDigests(image.bootstrap, *file)) {}

    // Reads ci entry `ci` into `out` and checks its digest where one is known.
    void read(uint32_t ci, std::vector<uint8_t>& out) const {
        const BlobChunk& c = file->chunks()[ci];
        try {
            file->readChunk(c, out);
        } catch (const Error& err) {
            fail("{} (chunk {})", err.what(), ci);
        }
        if (expected[ci] && digestOf(digester, out) != *expected[ci]) {
            fail("blob {}: chunk {} at compressed offset {:#x}+{}: digest mismatch", file->id(), ci,
                 c.compressed_offset, c.compressed_size);
        }
    }
};

// Returns the file written: raw_dir/<blob id>.
std::filesystem::path writeRawBlob(const Image& image, uint32_t index, const std::string& blob_dir,
                                   const std::filesystem::path& raw_dir) {
    const OpenBlob blob(image, index, blob_dir);
    const std::filesystem::path path = raw_dir / blob.file->id();
    TempOutput out(path);
    // Sparse: only chunk ranges are written; the gaps up to the next 4 KiB boundary stay zero.
    if (::ftruncate(out.fd(), static_cast<off_t>(blob.file->entry().uncompressed_size)) != 0) {
        failErrno(out.tempPath());
    }
    std::vector<uint8_t> data;
    for (uint32_t i = 0; i < blob.file->chunks().size(); ++i) {
        blob.read(i, data);
        pwriteAll(out.fd(), data, blob.file->chunks()[i].uncompressed_offset, out.tempPath());
    }
    out.commit();
    return path;
}

// libarchive's pax writer puts (sec, nsec) as "sec.nsec", the sign of sec for the whole
// (archive_write_set_format_pax.c): -86401 s + 0.5 s, that is -86400.5 s, goes as (-86400, 5e8),
// as builder/source/MemberTime.h reads it back. A time between -1 and 0 s cannot be put so: it
// goes as positive.
std::pair<time_t, long> paxTime(uint64_t on_disk_sec, uint32_t nsec) {
    const auto sec = static_cast<int64_t>(on_disk_sec);
    if (sec >= 0 || nsec == 0) return {sec, nsec};
    return {sec + 1, 1'000'000'000 - static_cast<long>(nsec)};
}

struct ArchiveDeleter {
    void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
    void operator()(archive_entry* e) const { archive_entry_free(e); }
};

// The calling thread's LC_CTYPE, `name` if that locale exists, for the object's lifetime.
class ThreadLocale {
public:
    explicit ThreadLocale(const char* name) : locale_(::newlocale(LC_CTYPE_MASK, name, locale_t{})) {
        if (locale_ != locale_t{}) previous_ = ::uselocale(locale_);
    }
    ~ThreadLocale() {
        if (locale_ == locale_t{}) return;
        ::uselocale(previous_);
        ::freelocale(locale_);
    }
    ThreadLocale(const ThreadLocale&) = delete;
    ThreadLocale& operator=(const ThreadLocale&) = delete;
    bool set() const { return locale_ != locale_t{}; }

private:
    locale_t locale_;
    locale_t previous_ = LC_GLOBAL_LOCALE;
};

class TarExport {
public:
    TarExport(const Image& image, std::string blob_dir) : image_(image), blob_dir_(std::move(blob_dir)) {}

    void write(int fd, const std::string& name) {
        name_ = name;
        archive_.reset(archive_write_new());
        if (!archive_) fail("{}: cannot create a tar writer", name_);
        check(archive_write_set_format_pax(archive_.get()), "pax format");
        // pax stores names as UTF-8, converted from the locale's charset, which fails on anything
        // but ASCII in "C". In C.UTF-8 a UTF-8 name goes as it is, and a name that is not (EROFS
        // names are bytes) is stored as it is with hdrcharset=BINARY, for that entry alone: set for
        // all, that keyword makes GNU tar warn about every extended header.
        const ThreadLocale utf8("C.UTF-8");
        if (!utf8.set()) check(archive_write_set_options(archive_.get(), "hdrcharset=BINARY"), "options");
        check(archive_write_open_fd(archive_.get(), fd), "open");
        try {
            image_.bootstrap.walk([&](const std::string& path, const Inode& ino) {
                if (path != "/") writeEntry(path.substr(1), ino);
            });
            check(archive_write_close(archive_.get()), "close");
        } catch (...) {
            archive_.reset();  // while `fd` is still open: freeing flushes into it
            throw;
        }
        archive_.reset();
    }

private:
    void check(int rc, std::string_view what) const {
        if (rc != ARCHIVE_OK) fail("{}: tar {}: {}", name_, what, archive_error_string(archive_.get()));
    }

    // libarchive's pax writer warns only when a name, link target or owner name is not in the
    // locale's charset (archive_write_set_format_pax.c): the entry is then stored in binary, with
    // hdrcharset=BINARY (see write()). Every other outcome but ARCHIVE_OK fails.
    void checkHeader(int rc, const std::string& path) const {
        if (rc != ARCHIVE_WARN) check(rc, "header of " + path);
    }

    void writeData(std::span<const uint8_t> data, const std::string& path) const {
        size_t done = 0;
        while (done < data.size()) {
            la_ssize_t n = archive_write_data(archive_.get(), data.data() + done, data.size() - done);
            if (n <= 0) fail("{}: writing {}: {}", name_, path, archive_error_string(archive_.get()));
            done += static_cast<size_t>(n);
        }
    }

    const OpenBlob& blob(uint32_t index) {
        auto it = blobs_.find(index);
        if (it == blobs_.end()) it = blobs_.emplace(index, OpenBlob(image_, index, blob_dir_)).first;
        return it->second;
    }

    void writeEntry(const std::string& path, const Inode& ino) {
        if (S_ISSOCK(ino.mode)) return;  // tar has no socket type
        std::unique_ptr<archive_entry, EntryDeleter> e(archive_entry_new());
        if (!e) fail("{}: out of memory", name_);
        archive_entry_set_pathname(e.get(), path.c_str());
        archive_entry_set_mode(e.get(), ino.mode);
        archive_entry_set_uid(e.get(), ino.uid);
        archive_entry_set_gid(e.get(), ino.gid);
        const auto [sec, nsec] = paxTime(ino.mtime, ino.mtime_nsec);
        archive_entry_set_mtime(e.get(), sec, nsec);
        for (const auto& [name, value] : ino.xattrs) {
            archive_entry_xattr_add_entry(e.get(), name.c_str(), value.data(), value.size());
        }
        if (!ino.isDir()) {
            // Hardlinks are one nid under several names: the first is stored, the others link to it.
            auto [it, first] = first_path_.emplace(ino.nid, path);
            if (!first) {
                archive_entry_set_hardlink(e.get(), it->second.c_str());
                archive_entry_set_size(e.get(), 0);
                checkHeader(archive_write_header(archive_.get(), e.get()), path);
                return;
            }
        }
        if (ino.isLink()) {
            const std::vector<uint8_t> target = image_.bootstrap.readData(ino.nid);
            archive_entry_set_symlink(e.get(), std::string(target.begin(), target.end()).c_str());
        } else if (ino.isDevice()) {
            archive_entry_set_rdevmajor(e.get(), erofs::devMajor(ino.rdev));
            archive_entry_set_rdevminor(e.get(), erofs::devMinor(ino.rdev));
        } else if (ino.isReg()) {
            archive_entry_set_size(e.get(), static_cast<la_int64_t>(ino.size));
        }
        const bool chunked = ino.isReg() && ino.layout == erofs::kChunkBased;
        const std::vector<bool> holes = chunked ? zeroChunks(ino, path) : std::vector<bool>{};
        if (std::find(holes.begin(), holes.end(), true) != holes.end()) addSparseMap(e.get(), ino, holes);
        checkHeader(archive_write_header(archive_.get(), e.get()), path);
        if (!ino.isReg()) return;
        if (!chunked) {
            writeData(image_.bootstrap.readData(ino.nid), path);
            return;
        }
        for (size_t i = 0; i < ino.chunks.size(); ++i) {
            const InodeChunk& c = ino.chunks[i];
            if (holes[i]) {
                // libarchive drops the bytes of a sparse entry's holes (archive_write_set_format_pax.c).
                writeData(zeros(c.length), path);
                continue;
            }
            blob(c.blob_index).read(c.ci_index, chunk_);
            writeData(chunk_, path);
        }
    }

    // Which of a file's chunks are zeros by their digest, so that its holes (a sparse lastlog of a
    // terabyte) are a sparse map in the tar rather than bytes. Checks each chunk against its ci.
    std::vector<bool> zeroChunks(const Inode& ino, const std::string& path) {
        std::vector<bool> zero(ino.chunks.size());
        for (size_t i = 0; i < ino.chunks.size(); ++i) {
            const InodeChunk& c = ino.chunks[i];
            const OpenBlob& b = blob(c.blob_index);
            const BlobChunk& ci = b.file->chunks()[c.ci_index];
            if (ci.uncompressed_offset != c.uncompressed_offset || ci.uncompressed_size != c.length) {
                fail("{}: {} chunk at {}: {:#x}+{} disagrees with blob {} ci {} ({:#x}+{})", image_.bootstrap.name(),
                     path, c.file_offset, c.uncompressed_offset, c.length, b.file->id(), c.ci_index,
                     ci.uncompressed_offset, ci.uncompressed_size);
            }
            const std::optional<Digest>& expected = b.expected[c.ci_index];
            zero[i] = expected && *expected == zeroDigest(b.digester, c.length);
        }
        return zero;
    }

    // The data runs between the holes; a file of holes only has one empty run at its end.
    static void addSparseMap(archive_entry* e, const Inode& ino, const std::vector<bool>& holes) {
        uint64_t start = 0;
        uint64_t length = 0;
        bool any = false;
        for (size_t i = 0; i <= ino.chunks.size(); ++i) {
            if (i < ino.chunks.size() && !holes[i]) {
                if (length == 0) start = ino.chunks[i].file_offset;
                length += ino.chunks[i].length;
                continue;
            }
            if (length == 0) continue;
            archive_entry_sparse_add_entry(e, static_cast<la_int64_t>(start), static_cast<la_int64_t>(length));
            length = 0;
            any = true;
        }
        if (!any) archive_entry_sparse_add_entry(e, static_cast<la_int64_t>(ino.size), 0);
    }

    const Digest& zeroDigest(Digester digester, uint32_t length) {
        auto [it, fresh] = zero_digests_.try_emplace({digester, length});
        if (fresh) it->second = digestOf(digester, zeros(length));
        return it->second;
    }

    std::span<const uint8_t> zeros(uint32_t length) {
        if (zeros_.size() < length) zeros_.resize(length);
        return std::span<const uint8_t>(zeros_).first(length);
    }

    const Image& image_;
    std::string blob_dir_;
    std::string name_;
    std::unique_ptr<archive, ArchiveDeleter> archive_;
    std::unordered_map<uint32_t, OpenBlob> blobs_;
    std::unordered_map<uint64_t, std::string> first_path_;
    std::vector<uint8_t> chunk_;
    std::vector<uint8_t> zeros_;
    std::map<std::pair<Digester, uint32_t>, Digest> zero_digests_;
};

}  // namespace

void unpack(const UnpackOptions& options) {
    if (options.raw_dir.empty() && options.tar.empty()) fail("unpack needs a raw directory or a tar output");
    const Image image = openImage(options.bootstrap);
    if (!options.raw_dir.empty()) {
        std::error_code ec;
        const bool made = std::filesystem::create_directories(options.raw_dir, ec);
        if (ec) fail("cannot create {}: {}", options.raw_dir, ec.message());
        // All or nothing: a blob that cannot be read takes what was written before it away.
        std::vector<std::filesystem::path> written;
        try {
            for (uint32_t i = 0; i < image.bootstrap.blobs().size(); ++i) {
                written.push_back(writeRawBlob(image, i, options.blob_dir, options.raw_dir));
            }
        } catch (...) {
            for (const auto& path : written) std::filesystem::remove(path, ec);
            if (made) std::filesystem::remove(options.raw_dir, ec);
            throw;
        }
    }
    if (!options.tar.empty()) {
        TarExport tar(image, options.blob_dir);
        if (options.tar == "-") {
            tar.write(STDOUT_FILENO, "stdout");
        } else {
            std::filesystem::path path(options.tar);
            if (path.parent_path().empty()) path = "." / path;
            TempOutput out(path);
            tar.write(out.fd(), options.tar);
            out.commit();
        }
    }
}

}  // namespace rafs::build
