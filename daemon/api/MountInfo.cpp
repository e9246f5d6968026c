#include "daemon/api/MountInfo.h"

#include "format/Error.h"

#include <linux/magic.h>
#include <sys/statfs.h>

#include <cerrno>

#include <fstream>
#include <sstream>

namespace rafsd {

namespace fs = std::filesystem;

namespace {

// Calls `fn(mountpoint, type, source)` for each line of /proc/self/mountinfo, in mount order.
template <typename Fn>
void forEachMount(Fn fn) {
    std::ifstream in("/proc/self/mountinfo");
    if (!in) rafs::failErrno("cannot read /proc/self/mountinfo");
    // Fields (proc(5)): id parent major:minor root mountpoint options [optional...] - type source ...
    // Paths escape space, tab, newline and backslash as \ooo.
    const auto unescape = [](const std::string& field) {
        std::string out;
        for (size_t i = 0; i < field.size(); ++i) {
            if (field[i] == '\\' && i + 3 < field.size()) {
                out += static_cast<char>(std::stoi(field.substr(i + 1, 3), nullptr, 8));
                i += 3;
            } else {
                out += field[i];
            }
        }
        return out;
    };
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id, parent, device, root, mountpoint, field, type, what, options;
        fields >> id >> parent >> device >> root >> mountpoint;
        while (fields >> field && field != "-") {
        }
        fields >> type >> what >> options;
        fn(unescape(mountpoint), type, unescape(what), options);
    }
}

}  // namespace

std::optional<std::string> erofsMountOn(const fs::path& dir) {
    std::optional<std::string> source;
    forEachMount([&](const std::string& mountpoint, const std::string& type, const std::string& what,
                     const std::string&) {
        if (mountpoint != dir.string()) return;
        if (type == "erofs") source = what;
        else source.reset();
    });
    return source;
}

bool erofsMountWithOption(const fs::path& dir, const std::string& option) {
    bool found = false;
    forEachMount([&](const std::string& mountpoint, const std::string& type, const std::string&,
                     const std::string& options) {
        if (mountpoint != dir.string()) return;
        found = type == "erofs" && ("," + options + ",").find("," + option + ",") != std::string::npos;
    });
    return found;
}

std::set<std::string> erofsMountSources() {
    std::set<std::string> sources;
    forEachMount([&](const std::string&, const std::string& type, const std::string& what, const std::string&) {
        if (type == "erofs") sources.insert(what);
    });
    return sources;
}

bool hasErofsMount(const fs::path& dir) {
    struct statfs st {};
    if (::statfs(dir.c_str(), &st) != 0) {
        if (errno == ENOENT) return false;  // removed since it was mounted on: nothing there
        rafs::failErrno("statfs " + dir.string());
    }
    return static_cast<unsigned long>(st.f_type) == EROFS_SUPER_MAGIC_V1;
}

}  // namespace rafsd
