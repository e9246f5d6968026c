// An image's start-up trace in file terms: the files whose chunks were first read, in that order
// (AccessTrace gives the chunks). The text is a prefetch list as `mkrafs build --prefetch-list`
// and `mkrafs convert --prefetch-trace` read it: '#' comment lines, then one absolute path per
// line. Kept in the state dir by image, so the last start of each image can be looked up after
// rafsd stopped.
#pragma once

#include "format/Bootstrap.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rafsd {

struct StartTrace {
    std::vector<std::string> paths;  // in order of each file's first chunk read
    size_t chunks = 0;               // chunks read, in all
    // Blobs whose data was in the cache at the mount, which the kernel reads without asking
    // rafsd: their files are missing from `paths` as far as that data went. Named in the text.
    std::vector<std::string> untraced_blobs;

    // A chunk shared by several files (deduplicated) counts for the first file that holds it in
    // the bootstrap's directory order.
    static StartTrace of(const rafs::Bootstrap& bootstrap, const std::vector<std::pair<uint32_t, uint32_t>>& order);

    std::string text(const std::string& image) const;
    // Whether a trace's text says that it left blobs out.
    static bool leftBlobsOut(std::string_view text);
};

// state_dir/traces/<key>.list, where key names the image: its manifest digest when mounted by
// reference, else the sha256 of its bootstrap.
std::filesystem::path tracePath(const std::filesystem::path& state_dir, const rafs::Bootstrap& bootstrap,
                                const std::string& manifest_digest);

}  // namespace rafsd
