// Blob ids name files and URLs; anything but 64 lower-case hex characters could escape a
// directory or a URL path.
#pragma once

#include <string>

namespace rafsd {

// Throws rafs::Error "invalid blob id '<id>'".
void checkBlobId(const std::string& id);

}  // namespace rafsd
