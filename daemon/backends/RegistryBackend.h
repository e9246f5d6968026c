// backend.type = "registry": blob <id> is sha256:<id> in one repository of an OCI registry.
#pragma once

#include "daemon/backends/NetworkBackend.h"
#include "registry/RegistryClient.h"

#include <memory>

namespace rafsd {

class RegistryBackend final : public NetworkBackend {
public:
    explicit RegistryBackend(std::unique_ptr<registry::RegistryClient> client) : client_(std::move(client)) {}
    void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
    uint64_t size(const std::string& blob_id) override;
    std::string describe() const override { return client_->describe(); }
    registry::TransferStats& stats() override { return client_->stats(); }

private:
    std::unique_ptr<registry::RegistryClient> client_;
};

}  // namespace rafsd
