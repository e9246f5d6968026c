// backend.type = "http": blob <id> is <url>/<id> on a web server, read with range requests.
#pragma once

#include "daemon/backends/NetworkBackend.h"
#include "registry/HttpBlobClient.h"

#include <memory>

namespace rafsd {

class HttpBackend final : public NetworkBackend {
public:
    explicit HttpBackend(std::unique_ptr<registry::HttpBlobClient> client) : client_(std::move(client)) {}
    void read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
    void readArriving(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out,
                      const Arrived& arrived) override;
    uint64_t size(const std::string& blob_id) override;
    uint64_t probeSize(const std::string& blob_id) override;
    std::string describe() const override { return "http:" + client_->base(); }
    registry::TransferStats& stats() override { return client_->stats(); }

private:
    std::unique_ptr<registry::HttpBlobClient> client_;
};

}  // namespace rafsd
