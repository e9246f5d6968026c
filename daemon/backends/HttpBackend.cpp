#include "daemon/backends/HttpBackend.h"

#include "daemon/backends/BlobId.h"

namespace rafsd {

void HttpBackend::read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
    readArriving(blob_id, offset, out, {});
}

void HttpBackend::readArriving(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out,
                               const Arrived& arrived) {
    checkBlobId(blob_id);
    client_->readBlob(blob_id, offset, out, arrived);
    warnIfRangesIgnored();
}

uint64_t HttpBackend::size(const std::string& blob_id) {
    checkBlobId(blob_id);
    return client_->blobSize(blob_id);
}

uint64_t HttpBackend::probeSize(const std::string& blob_id) {
    checkBlobId(blob_id);
    return client_->blobSize(blob_id, true);
}

}  // namespace rafsd
