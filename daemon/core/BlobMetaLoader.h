// Builds a BlobDescriptor: the blob's chunks (offsets, sizes) and their digests. The bootstrap is
// the trust anchor: where its chunk info table lists every chunk of the blob (images mkrafs built),
// the descriptor comes from it alone. Otherwise the ci array is fetched from the backend (or read
// from a local copy kept in the cache directory, so a blob whose cache is complete needs no
// backend at all), with the digests from the blob's blob.digest section, which its ToC vouches for.
#pragma once

#include "format/Bootstrap.h"
#include "daemon/backends/Backend.h"
#include "daemon/core/BlobDescriptor.h"

#include <filesystem>

namespace rafsd {

BlobDescriptor loadBlobDescriptor(const rafs::Bootstrap& bootstrap, const rafs::BootstrapBlob& blob,
                                  Backend& backend, const std::filesystem::path& cache_dir);

}  // namespace rafsd
