// Builds a BlobDescriptor: the ci array fetched from the backend (or from a local copy kept in
// the cache directory, so a blob whose cache is complete needs no backend at all), and the chunk
// digests, taken from the bootstrap's chunk info table (the bootstrap is the trust anchor) or,
// for chunks it does not list, from the blob's own blob.digest section.
#pragma once

#include "format/Bootstrap.h"
#include "daemon/backends/Backend.h"
#include "daemon/core/BlobDescriptor.h"

#include <filesystem>

namespace rafsd {

BlobDescriptor loadBlobDescriptor(const rafs::Bootstrap& bootstrap, const rafs::BootstrapBlob& blob,
                                  Backend& backend, const std::filesystem::path& cache_dir);

}  // namespace rafsd
