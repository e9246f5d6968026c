// A directory of blobs named by blob id: the embedded default backend.
#pragma once

#include "daemon/backends/Backend.h"

#include <filesystem>

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

}  // namespace rafsd
