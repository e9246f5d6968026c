#include "daemon/core/DurableFile.h"

#include "format/Error.h"
#include "format/FileIo.h"
#include "format/UniqueFd.h"

#include <fcntl.h>
#include <unistd.h>

namespace rafsd {

namespace {

void writeFile(const std::filesystem::path& path, std::span<const uint8_t> data, bool sync) {
    rafs::UniqueFd file(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (file.get() < 0) rafs::failErrno("create " + path.string());
    rafs::writeAll(file.get(), data, path.string());
    if (sync && ::fsync(file.get()) != 0) rafs::failErrno("fsync " + path.string());
    file.close(path.string());
}

}  // namespace

void writeFileSynced(const std::filesystem::path& path, std::span<const uint8_t> data) { writeFile(path, data, true); }

void writeFileUnsynced(const std::filesystem::path& path, std::span<const uint8_t> data) {
    writeFile(path, data, false);
}

void replaceFileSynced(const std::filesystem::path& path, std::span<const uint8_t> data) {
    const std::filesystem::path dir = path.parent_path();
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) rafs::fail("cannot create {}: {}", dir.string(), ec.message());
    const std::filesystem::path temp = std::filesystem::path(path).concat(".tmp");
    try {
        writeFileSynced(temp, data);
    } catch (...) {
        std::filesystem::remove(temp, ec);  // best effort: the write failed already
        throw;
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) rafs::failErrno("rename " + temp.string() + " to " + path.string());
    syncDirectory(dir);
}

void syncDirectory(const std::filesystem::path& dir) {
    rafs::UniqueFd parent(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (parent.get() < 0) rafs::failErrno("open " + dir.string());
    if (::fsync(parent.get()) != 0) rafs::failErrno("fsync " + dir.string());
    parent.close(dir.string());
}

}  // namespace rafsd
