#include "registry/CredentialStore.h"

#include "format/ChildProcess.h"
#include "format/Error.h"
#include "registry/Base64.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace registry {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxHelperOutput = 64 * 1024;
constexpr int kHelperTimeoutMs = 10'000;

// "https://host:5000/v1/" -> "host:5000".
std::string hostOfKey(std::string key) {
    if (auto scheme = key.find("://"); scheme != std::string::npos) key.erase(0, scheme + 3);
    if (auto slash = key.find('/'); slash != std::string::npos) key.erase(slash);
    return key;
}

std::optional<Credentials> fromAuthEntry(const nlohmann::json& entry, const fs::path& path, const std::string& key) {
    if (!entry.is_object()) return std::nullopt;
    if (auto it = entry.find("auth"); it != entry.end() && it->is_string() && !it->get<std::string>().empty()) {
        auto decoded = base64Decode(it->get<std::string>());
        const size_t colon = decoded ? decoded->find(':') : std::string::npos;
        if (colon == std::string::npos) rafs::fail("{}: auths.\"{}\".auth is not base64 of user:password", path.string(), key);
        return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
    }
    auto user = entry.find("username");
    auto pass = entry.find("password");
    if (user != entry.end() && pass != entry.end() && user->is_string() && pass->is_string()) {
        return Credentials{user->get<std::string>(), pass->get<std::string>()};
    }
    return std::nullopt;
}

}  // namespace

std::optional<Credentials> runCredentialHelper(const std::string& helper, const std::string& host) {
    const bool valid_name = !helper.empty() && std::ranges::all_of(helper, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    });
    const std::string program = "docker-credential-" + helper;
    if (!valid_name) rafs::fail("credential helper '{}' is not a helper name", helper);
    rafs::ChildRun run;
    run.argv = {program, "get"};
    run.input = host;
    run.timeout = std::chrono::milliseconds(kHelperTimeoutMs);
    run.max_output = kMaxHelperOutput;
    const rafs::ChildResult result = rafs::runChild(run);
    if (result.timed_out) rafs::fail("{} get: no answer within {} s", program, kHelperTimeoutMs / 1000);
    const std::string& output = result.output;
    if (!result.exitedWith(0)) {
        // The helpers' own message for "nothing stored" (docker-credential-helpers).
        if (output.find("credentials not found") != std::string::npos) return std::nullopt;
        if (result.exitedWith(127)) rafs::fail("{}: not found in PATH", program);
        const std::string first_line = result.firstLine();
        rafs::fail("{} get failed ({})", program, first_line.empty() ? "no message" : first_line);
    }
    // After the exit status: a helper that failed without reading says more than the broken pipe.
    if (!result.input_written) rafs::fail("{} get: could not write the host to it", program);
    const auto json = nlohmann::json::parse(output, nullptr, false);
    if (!json.is_object() || !json.contains("Username") || !json.contains("Secret") || !json["Username"].is_string() ||
        !json["Secret"].is_string()) {
        rafs::fail("{} get: the answer is not {{\"Username\", \"Secret\"}} JSON", program);
    }
    return Credentials{json["Username"].get<std::string>(), json["Secret"].get<std::string>()};
}

CredentialStore::CredentialStore(fs::path path) : path_(path.empty() ? defaultPath() : std::move(path)) {}

fs::path CredentialStore::defaultPath() {
    if (const char* dir = std::getenv("DOCKER_CONFIG"); dir != nullptr && dir[0] != '\0') {
        return fs::path(dir) / "config.json";
    }
    return "/root/.docker/config.json";
}

std::string CredentialStore::describe() const {
    std::error_code ec;
    return std::filesystem::exists(path_, ec) || ec ? path_.string() : path_.string() + " (no such file)";
}

void CredentialStore::reloadIfChanged() {
    FileVersion now;
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0) {
        now = {true, st.st_dev, st.st_ino, static_cast<uint64_t>(st.st_size),
               st.st_mtim.tv_sec * 1'000'000'000 + st.st_mtim.tv_nsec, st.st_ctim.tv_sec * 1'000'000'000 + st.st_ctim.tv_nsec};
    } else if (errno != ENOENT) {
        rafs::failErrno("docker config " + path_.string());
    }
    if (loaded_ && now == version_) return;
    nlohmann::json config = nlohmann::json::object();
    if (now.exists) {
        if (now.size > kMaxConfigBytes) rafs::fail("{}: larger than {} bytes", path_.string(), kMaxConfigBytes);
        std::ifstream in(path_);
        std::stringstream text;
        text << in.rdbuf();
        if (!in) rafs::fail("cannot read {}", path_.string());
        config = nlohmann::json::parse(text.str(), nullptr, false);
        // The text is not quoted: it holds secrets.
        if (!config.is_object()) rafs::fail("{}: not a JSON object", path_.string());
    }
    config_ = std::move(config);
    version_ = now;
    loaded_ = true;
    from_helpers_.clear();
}

std::optional<Credentials> CredentialStore::lookup(const std::string& host) {
    std::lock_guard lock(mutex_);
    reloadIfChanged();
    auto helperFor = [&]() -> std::string {
        if (auto helpers = config_.find("credHelpers"); helpers != config_.end() && helpers->is_object()) {
            if (auto it = helpers->find(host); it != helpers->end() && it->is_string()) return it->get<std::string>();
        }
        if (auto store = config_.find("credsStore"); store != config_.end() && store->is_string()) {
            return store->get<std::string>();
        }
        return {};
    };
    if (const std::string helper = helperFor(); !helper.empty()) {
        auto cached = from_helpers_.find(host);
        if (cached == from_helpers_.end()) cached = from_helpers_.emplace(host, runCredentialHelper(helper, host)).first;
        if (cached->second) return cached->second;
    }
    if (auto auths = config_.find("auths"); auths != config_.end() && auths->is_object()) {
        if (auto it = auths->find(host); it != auths->end()) return fromAuthEntry(*it, path_, host);
        for (const auto& [key, entry] : auths->items()) {
            if (hostOfKey(key) == host) return fromAuthEntry(entry, path_, key);
        }
    }
    return std::nullopt;
}

void CredentialStore::forget(const std::string& host) {
    std::lock_guard lock(mutex_);
    from_helpers_.erase(host);
}

}  // namespace registry
