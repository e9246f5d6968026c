// mkrafs build: sources -> file tree -> chunk pipeline -> blobs + bootstrap.
#pragma once

#include "builder/writer/BuildOptions.h"

#include <iosfwd>

namespace rafs::build {

// Builds OUTPUT/image.boot and OUTPUT/blobs/<blob-id>. Nothing appears under OUTPUT unless the
// whole build succeeds: everything is staged in a temporary directory inside OUTPUT first.
// Prints a one-line summary per blob and for the bootstrap to `log`.
void build(const BuildOptions& options, std::ostream& log);

}  // namespace rafs::build
