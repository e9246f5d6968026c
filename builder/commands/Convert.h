// mkrafs convert: an OCI image (registry or OCI layout) into a RAFS v6 image, Nydus's way
// (rafs-v6.md §5): each tar layer becomes one data blob layer, one merged bootstrap becomes the
// last layer, and the config's diff_ids follow. Layers stream from the source into the builder;
// only the output blobs touch the disk, in a work directory removed at the end.
#pragma once

#include "builder/writer/BuildOptions.h"

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace rafs::build {

struct ConvertOptions {
    std::string source;  // HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]
    std::string target;
    std::string authfile;                       // docker config.json; empty: the default
    std::string cert_dir = "/etc/docker/certs.d";
    bool plain_http = false;                    // registries over http://
    std::optional<std::string> platform;        // OS/ARCH[/VARIANT]; default: the host's
    bool all_platforms = false;
    bool merge_index = false;                   // an index of the original and the RAFS manifests
    std::vector<std::string> mount_from;        // repositories of the target's registry to mount blobs from
    unsigned parallel_layers = 4;               // layers downloading at once
    std::string work_dir;                       // empty: $TMPDIR, else /var/tmp
    BuildOptions build;                         // sources and output unused
};

// Prints progress and a summary to `log`; throws Error. Nothing is visible under the target's
// tag unless everything before the final manifest was pushed.
void convert(const ConvertOptions& options, std::ostream& log);

}  // namespace rafs::build
