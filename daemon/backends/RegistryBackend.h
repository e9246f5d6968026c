// backend.type = "registry": blob <id> is sha256:<id> in one repository of an OCI registry.
#pragma once

#include "daemon/backends/NetworkBackend.h"
#include "registry/RegistryClient.h"

#include <memory>

namespace rafsd {

class RegistryBackend final : public NetworkBackend {
public:
    // The client may be shared: a mount by image reference resolves the image through it too, so
    // both share one connection pool, token and counters.
    explicit RegistryBackend(std::shared_ptr<registry::RegistryClient> client) : client_(std::move(client)) {}
    void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
    void readArriving(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out,
                      const Arrived& arrived) override;
    void readElsewhere(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
    uint64_t size(const std::string& blob_id) override;
    uint64_t probeSize(const std::string& blob_id) override;
    std::string describe() const override { return client_->describe(); }
    registry::TransferStats& stats() override { return client_->stats(); }
    const std::shared_ptr<registry::RegistryClient>& client() const { return client_; }

private:
    std::shared_ptr<registry::RegistryClient> client_;
};

}  // namespace rafsd
