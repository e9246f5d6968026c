#include "daemon/backends/RegistryBackend.h"

#include "daemon/backends/BlobId.h"

namespace rafsd {

// Blob ids are the sha256 of the blob file, so they are its digest in the registry.
void RegistryBackend::read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
    readArriving(blob_id, offset, out, {});
}

void RegistryBackend::readArriving(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out,
                                   const Arrived& arrived) {
    checkBlobId(blob_id);
    client_->readBlob("sha256:" + blob_id, offset, out, arrived);
    warnIfRangesIgnored();
}

void RegistryBackend::readElsewhere(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
    client_->distrustPreferredEndpoint();
    read(blob_id, offset, out);
}

uint64_t RegistryBackend::size(const std::string& blob_id) {
    checkBlobId(blob_id);
    return client_->blobSize("sha256:" + blob_id);
}

uint64_t RegistryBackend::probeSize(const std::string& blob_id) {
    checkBlobId(blob_id);
    return client_->blobSize("sha256:" + blob_id, true);
}

}  // namespace rafsd
