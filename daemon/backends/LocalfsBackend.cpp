#include "daemon/backends/LocalfsBackend.h"

#include "daemon/backends/BlobId.h"
#include "format/UniqueFd.h"
#include "format/Error.h"
#include "format/FileIo.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rafsd {

namespace {

void readRange(const std::filesystem::path& path, const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
    const rafs::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) rafs::failErrno("localfs: cannot open blob " + path.string());
    // A blob shorter than its chunks need (checked at mount) shrank since.
    rafs::preadExactly(fd.get(), out, offset, "localfs: blob " + blob_id);
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

void BlobFileBackend::readArriving(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out,
                                   const Arrived& arrived) {
    if (blob_id != blob_id_) return inner_->readArriving(blob_id, offset, out, arrived);
    Backend::readArriving(blob_id, offset, out, arrived);
}

void BlobFileBackend::readElsewhere(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
    if (blob_id != blob_id_) return inner_->readElsewhere(blob_id, offset, out);
    read(blob_id, offset, out);
}

uint64_t BlobFileBackend::size(const std::string& blob_id) {
    return blob_id == blob_id_ ? fileSize(file_) : inner_->size(blob_id);
}

uint64_t BlobFileBackend::probeSize(const std::string& blob_id) {
    return blob_id == blob_id_ ? fileSize(file_) : inner_->probeSize(blob_id);
}

std::string BlobFileBackend::describe() const { return inner_->describe() + " + " + file_.string(); }

}  // namespace rafsd
