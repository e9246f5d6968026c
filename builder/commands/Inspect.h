// `mkrafs inspect`: prints a bootstrap's tables (and with `verbose` every file), then checks the
// bootstrap and every blob it names that is present, the way nydusd and the kernel will read them.
#pragma once

#include <ostream>
#include <string>

namespace rafs::build {

struct InspectOptions {
    // A bootstrap file, or a data blob holding an inline bootstrap (an "image.boot" ToC entry, as
    // `nydus-image create --blob-inline-meta` writes). The kind is recognised from the content; an
    // inline blob serves as the file of its own (the last) blob table entry.
    std::string bootstrap;
    // Directory of blob files named by blob id; default: the directory of `bootstrap`. Blobs
    // missing from it are reported and skipped.
    std::string blob_dir;
    bool verbose = false;
};

// Checks, stopping with rafs::Error at the first inconsistency:
// - the bootstrap on its own, with checkBootstrap (format/BootstrapCheck.h), the check
//   rafsd runs before every mount;
// - for each present blob: its size against the blob table, the ci header and array, the chunk
//   indexes and chunk info table against the ci entries, every chunk decompressing and matching
//   its digest (blob.digest section and/or chunk info table), every ToC entry's sha256 and the
//   blob table's ToC digest.
// Ends with "ok: N inodes, M chunks verified".
void inspect(const InspectOptions& options, std::ostream& out);

}  // namespace rafs::build
