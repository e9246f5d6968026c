#include "daemon/backends/LocalfsBackend.h"

#include "format/Error.h"
#include "daemon/backends/BlobId.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace rafsd {

namespace {

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

void readRange(const std::filesystem::path& path, const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) rafs::failErrno("localfs: cannot open blob " + path.string());
    size_t done = 0;
    while (done < out.size()) {
        ssize_t n = ::pread(fd.get(), out.data() + done, out.size() - done,
                            static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            rafs::failErrno("localfs: reading blob " + blob_id);
        }
        if (n == 0) {
            rafs::fail("localfs: blob {} ends before {} (needed {} bytes at {})", blob_id,
                       offset + out.size(), out.size(), offset);
        }
        done += static_cast<size_t>(n);
    }
}

uint64_t fileSize(const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) rafs::failErrno("localfs: blob " + path.string());
    return static_cast<uint64_t>(st.st_size);
}

}  // namespace

LocalfsBackend::LocalfsBackend(std::filesystem::path dir) : dir_(std::move(dir)) {}

std::filesystem::path LocalfsBackend::pathOf(const std::string& blob_id) const {
    checkBlobId(blob_id);
    return dir_ / blob_id;
}

void LocalfsBackend::read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
    readRange(pathOf(blob_id), blob_id, offset, out);
}

uint64_t LocalfsBackend::size(const std::string& blob_id) { return fileSize(pathOf(blob_id)); }

std::string LocalfsBackend::describe() const { return "localfs:" + dir_.string(); }

BlobFileBackend::BlobFileBackend(std::shared_ptr<Backend> inner, std::string blob_id, std::filesystem::path file)
    : inner_(std::move(inner)), blob_id_(std::move(blob_id)), file_(std::move(file)) {}

void BlobFileBackend::read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
    if (blob_id != blob_id_) return inner_->read(blob_id, offset, out);
    readRange(file_, blob_id, offset, out);
}

uint64_t BlobFileBackend::size(const std::string& blob_id) {
    return blob_id == blob_id_ ? fileSize(file_) : inner_->size(blob_id);
}

std::string BlobFileBackend::describe() const { return inner_->describe() + " + " + file_.string(); }

}  // namespace rafsd
