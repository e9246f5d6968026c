#include "daemon/api/ControlProtocol.h"

#include "format/Error.h"
#include "daemon/engines/fscache/FscacheName.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace rafsd {
namespace {

using nlohmann::json;

constexpr size_t kMaxShown = 80;
constexpr std::string_view kOps = "mount, umount, list, status, trace, gc, resolve";
// distribution's limit on a whole reference (reference/reference.go: NameTotalLengthMax is 255
// for the name), with room for a tag and a digest.
constexpr size_t kMaxImageReference = 512;

// Cuts text to at most `max` bytes without splitting a UTF-8 sequence, marking the cut.
std::string truncated(std::string text, size_t max) {
    if (text.size() <= max) return text;
    size_t cut = max - 3;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;
    text.resize(cut);
    return text + "...";
}

std::string oneLine(std::string text) {
    std::ranges::replace(text, '\n', ' ');
    std::ranges::replace(text, '\r', ' ');
    return text;
}

std::string dumped(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

// A request value as messages show it. Containers are only named: dumping a deeply nested one
// would recurse once per level.
std::string shown(const json& value) {
    if (value.is_array()) return "an array";
    if (value.is_object()) return "an object";
    return truncated(dumped(value), kMaxShown);
}

// The fields of one request object; finish() refuses fields no read asked for, so a misspelt
// optional field is an error rather than silently ignored.
class Fields {
public:
    Fields(const json& object, std::string_view op) : object_(object), op_(op) {}

    const json* optional(std::string_view name) {
        known_.push_back(name);
        auto it = object_.find(name);
        return it == object_.end() ? nullptr : &*it;
    }

    // An optional true or false; false when absent.
    bool flag(std::string_view name) {
        const json* value = optional(name);
        if (value != nullptr && !value->is_boolean()) rafs::fail("{}: {} is not true or false", name, shown(*value));
        return value != nullptr && value->get<bool>();
    }

    const json& required(std::string_view name) {
        const json* value = optional(name);
        if (value == nullptr) rafs::fail("{} request has no '{}'", op_, name);
        return *value;
    }

    void finish() const {
        for (const auto& [name, value] : object_.items()) {
            if (std::ranges::find(known_, name) == known_.end()) {
                rafs::fail("unknown field '{}' in {} request", truncated(name, kMaxShown), op_);
            }
        }
    }

private:
    const json& object_;
    std::string_view op_;
    std::vector<std::string_view> known_ = {"op"};
};

const std::string& stringValue(const json& value, std::string_view name) {
    if (!value.is_string()) rafs::fail("{}: {} is not a string", name, shown(value));
    return value.get_ref<const std::string&>();
}

std::filesystem::path absolutePath(const json& value, std::string_view name) {
    const std::string& text = stringValue(value, name);
    if (!text.starts_with('/') || text.find('\0') != std::string::npos) {
        rafs::fail("{}: {} is not an absolute path", name, shown(value));
    }
    return text;
}

// domain_id and fsid: names the fscache engine can use.
std::string identifier(const json& value, std::string_view name) {
    const std::string& text = stringValue(value, name);
    if (!validFscacheName(text)) rafs::fail("{}: {} is not a name of {}", name, shown(value), kFscacheNameRule);
    return text;
}

EngineKind engine(const json& value) {
    std::optional<EngineKind> kind;
    if (value.is_string()) kind = parseEngineKind(value.get_ref<const std::string&>());
    if (!kind) rafs::fail("engine: {} is not one of {}", shown(value), kEngineNames);
    return *kind;
}

// An image reference as far as the protocol checks it; rafsd parses it.
std::string imageReference(const json& value) {
    const std::string& text = stringValue(value, "image");
    if (text.empty() || text.size() > kMaxImageReference || text.find('\0') != std::string::npos) {
        rafs::fail("image: {} is not an image reference", shown(value));
    }
    return text;
}

MountRequest mountRequest(Fields& fields) {
    MountRequest request;
    const json* bootstrap = fields.optional("bootstrap");
    const json* image = fields.optional("image");
    if (bootstrap != nullptr && image != nullptr) rafs::fail("mount request has both 'bootstrap' and 'image'");
    if (image != nullptr) {
        request.image = imageReference(*image);
    } else {
        request.bootstrap = absolutePath(fields.required("bootstrap"), "bootstrap");
    }
    request.mountpoint = absolutePath(fields.required("mountpoint"), "mountpoint");
    if (const json* v = fields.optional("blob_dir")) request.blob_dir = absolutePath(*v, "blob_dir");
    if (const json* v = fields.optional("engine")) request.engine = engine(*v);
    if (const json* v = fields.optional("domain_id")) request.domain_id = identifier(*v, "domain_id");
    if (const json* v = fields.optional("fsid")) request.fsid = identifier(*v, "fsid");
    request.register_only = fields.flag("register_only");
    request.layer_store = fields.flag("layer_store");
    return request;
}

json toJson(const MountRequest& request) {
    json out = {{"op", "mount"}, {"mountpoint", request.mountpoint.string()}};
    if (request.image) out["image"] = *request.image;
    else out["bootstrap"] = request.bootstrap.string();
    if (request.blob_dir) out["blob_dir"] = request.blob_dir->string();
    if (request.engine) out["engine"] = engineName(*request.engine);
    if (request.domain_id) out["domain_id"] = *request.domain_id;
    if (request.fsid) out["fsid"] = *request.fsid;
    if (request.register_only) out["register_only"] = true;
    if (request.layer_store) out["layer_store"] = true;
    return out;
}

json toJson(const UmountRequest& request) { return {{"op", "umount"}, {"mountpoint", request.mountpoint.string()}}; }

json toJson(const ListRequest&) { return {{"op", "list"}}; }

json toJson(const TraceRequest& request) { return {{"op", "trace"}, {"mountpoint", request.mountpoint.string()}}; }

json toJson(const StatusRequest& request) {
    json out = {{"op", "status"}};
    if (request.mountpoint) out["mountpoint"] = request.mountpoint->string();
    return out;
}

json toJson(const GcRequest& request) {
    json out = {{"op", "gc"}};
    if (request.dry_run) out["dry_run"] = true;
    return out;
}

json toJson(const ResolveRequest& request) { return {{"op", "resolve"}, {"image", request.image}}; }

}  // namespace

Request parseRequest(std::string_view line) {
    json object;
    try {
        object = json::parse(line);
    } catch (const json::parse_error& e) {
        // Drop the "[json.exception.parse_error.101] " prefix; keep the position and the reason.
        std::string_view reason = e.what();
        if (auto end = reason.find("] "); end != std::string_view::npos) reason.remove_prefix(end + 2);
        rafs::fail("request is not valid JSON: {}", truncated(std::string(reason), 2 * kMaxShown));
    }
    if (!object.is_object()) rafs::fail("request is not a JSON object");

    auto op = object.find("op");
    if (op == object.end()) rafs::fail("request has no 'op'");
    if (!op->is_string()) rafs::fail("op: {} is not one of {}", shown(*op), kOps);
    const std::string& name = op->get_ref<const std::string&>();

    Fields opFields(object, name);
    Request request;
    if (name == "mount") {
        request = mountRequest(opFields);
    } else if (name == "umount") {
        request = UmountRequest{absolutePath(opFields.required("mountpoint"), "mountpoint")};
    } else if (name == "list") {
        request = ListRequest{};
    } else if (name == "status") {
        StatusRequest status;
        if (const json* v = opFields.optional("mountpoint")) status.mountpoint = absolutePath(*v, "mountpoint");
        request = status;
    } else if (name == "trace") {
        request = TraceRequest{absolutePath(opFields.required("mountpoint"), "mountpoint")};
    } else if (name == "gc") {
        GcRequest gc;
        gc.dry_run = opFields.flag("dry_run");
        request = gc;
    } else if (name == "resolve") {
        request = ResolveRequest{imageReference(opFields.required("image"))};
    } else {
        rafs::fail("op: {} is not one of {}", shown(*op), kOps);
    }
    opFields.finish();
    return request;
}

std::string formatRequest(const Request& request) {
    return dumped(std::visit([](const auto& r) { return toJson(r); }, request));
}

std::string okResponse(const json& fields) {
    json response = fields.is_null() ? json::object() : fields;
    if (!response.is_object()) rafs::fail("internal error: the response is {}, not a JSON object", shown(fields));
    response["ok"] = true;
    return dumped(response);
}

std::string errorResponse(std::string_view message) {
    return dumped(json{{"ok", false}, {"error", oneLine(std::string(message))}});
}

json parseResponse(std::string_view line) {
    json response = json::parse(line, nullptr, false);
    auto ok = response.is_object() ? response.find("ok") : response.end();
    if (response.is_discarded() || !response.is_object() || ok == response.end() || !ok->is_boolean()) {
        rafs::fail("malformed response from rafsd: {}", truncated(oneLine(std::string(line)), kMaxShown));
    }
    if (!ok->get<bool>()) {
        auto error = response.find("error");
        if (error == response.end() || !error->is_string()) rafs::fail("rafsd reported an error without a message");
        throw rafs::Error(oneLine(error->get<std::string>()));
    }
    return response;
}

sockaddr_un unixAddress(const std::filesystem::path& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::string& text = path.native();
    if (text.empty() || text.size() >= sizeof address.sun_path) {
        rafs::fail("socket path '{}' must be 1 to {} bytes long", path.string(), sizeof address.sun_path - 1);
    }
    std::memcpy(address.sun_path, text.c_str(), text.size() + 1);
    return address;
}

}  // namespace rafsd
