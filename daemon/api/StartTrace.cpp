#include "daemon/api/StartTrace.h"

#include "format/Digest.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>

namespace rafsd {

namespace {

constexpr std::string_view kLeftOut = "# not traced: reads of";

}  // namespace

StartTrace StartTrace::of(const rafs::Bootstrap& bootstrap, const std::vector<std::pair<uint32_t, uint32_t>>& order) {
    std::map<std::pair<uint32_t, uint32_t>, size_t> file_of;  // (blob, ci) -> index in `files`
    std::vector<std::string> files;
    bootstrap.walk([&](const std::string& path, const rafs::Inode& inode) {
        if (!inode.isReg() || inode.chunks.empty()) return;
        // A prefetch list is one path per line, trailing blanks dropped (mkrafs --prefetch-list):
        // a name it cannot carry is left out of the trace, not written for the build to refuse.
        if (path.find_first_of("\n\r") != std::string::npos || path.ends_with(' ')) return;
        const size_t index = files.size();
        files.push_back(path.starts_with('/') ? path : "/" + path);
        for (const rafs::InodeChunk& c : inode.chunks) file_of.try_emplace({c.blob_index, c.ci_index}, index);
    });
    StartTrace trace;
    trace.chunks = order.size();
    std::vector<bool> listed(files.size(), false);
    for (const auto& chunk : order) {
        const auto it = file_of.find(chunk);
        if (it == file_of.end() || listed[it->second]) continue;
        listed[it->second] = true;
        trace.paths.push_back(files[it->second]);
    }
    return trace;
}

std::string StartTrace::text(const std::string& image) const {
    std::string out = fmt::format("# rafsd start trace of {}: {} files, {} chunks, in the order first read\n", image,
                                  paths.size(), chunks);
    if (!untraced_blobs.empty()) {
        out += fmt::format("{} {} blob{} whose data was in the cache at the mount (fanotify: [trace] cached_blobs_for): "
                           "{}\n", kLeftOut, untraced_blobs.size(), untraced_blobs.size() == 1 ? "" : "s",
                           fmt::join(untraced_blobs, " "));
    }
    for (const std::string& p : paths) out += p + "\n";
    return out;
}

bool StartTrace::leftBlobsOut(std::string_view text) {
    return text.starts_with(kLeftOut) || text.find(fmt::format("\n{}", kLeftOut)) != std::string_view::npos;
}

std::filesystem::path tracePath(const std::filesystem::path& state_dir, const rafs::Bootstrap& bootstrap,
                                const std::string& manifest_digest) {
    std::string key = manifest_digest;
    if (key.empty()) key = "sha256:" + rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bootstrap.bytes()));
    if (const size_t colon = key.find(':'); colon != std::string::npos) key[colon] = '-';
    return state_dir / "traces" / (key + ".list");
}

}  // namespace rafsd
