// A directory of blobs named by blob id: the embedded default backend.
#pragma once

#include "daemon/backends/Backend.h"

#include <filesystem>
#include <memory>

namespace rafsd {

class LocalfsBackend : public Backend {
public:
    explicit LocalfsBackend(std::filesystem::path dir);
    void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
    uint64_t size(const std::string& blob_id) override;
    std::string describe() const override;

private:
    std::filesystem::path pathOf(const std::string& blob_id) const;
    std::filesystem::path dir_;
};

// One blob read from a given file, every other blob from `inner`: a Nydus blob with an inline
// bootstrap is named on the command line by its file, whose name (the sha256 of the whole file)
// differs from the blob id in its own bootstrap's blob table.
class BlobFileBackend : public Backend {
public:
    BlobFileBackend(std::shared_ptr<Backend> inner, std::string blob_id, std::filesystem::path file);
    void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
    void readArriving(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out,
                      const Arrived& arrived) override;
    void readElsewhere(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
    uint64_t size(const std::string& blob_id) override;
    uint64_t probeSize(const std::string& blob_id) override;
    std::string describe() const override;

private:
    std::shared_ptr<Backend> inner_;
    std::string blob_id_;
    std::filesystem::path file_;
};

}  // namespace rafsd
