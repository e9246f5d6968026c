// rafsctl: controls a running rafsd over its control socket (see daemon/api/ControlProtocol.h).
#include "format/CommandLine.h"
#include "format/Error.h"
#include "daemon/api/ControlClient.h"
#include "daemon/api/LayerStore.h"
#include "registry/ImageReference.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <set>
#include <vector>

namespace {

using nlohmann::json;

// Absolute, with the symlinks of its existing part resolved as mount(8) resolves its target, so
// one directory always goes to rafsd under one name.
std::filesystem::path absolutePath(const std::string& path) {
    std::error_code error;
    std::filesystem::path full = std::filesystem::absolute(path, error);
    if (!error) full = std::filesystem::weakly_canonical(full, error);
    if (error) rafs::fail("{}: {}", path, error.message());
    std::string text = full.string();
    while (text.size() > 1 && text.ends_with('/')) text.pop_back();
    return text;
}

// The response is rafsd's: every field is read defensively, a missing or odd one shows as "-".
const json& arrayField(const json& object, const char* key) {
    static const json empty = json::array();
    auto it = object.is_object() ? object.find(key) : object.end();
    return it != object.end() && it->is_array() ? *it : empty;
}

const json* numberField(const json& object, const std::string& key) {
    auto it = object.find(key);
    return it != object.end() && it->is_number() ? &*it : nullptr;
}

std::string number(const json& value) {
    return value.is_number_float() ? fmt::format("{:.3g}", value.get<double>()) : value.dump();
}

std::string text(const json& object, const char* key) {
    auto it = object.find(key);
    if (it == object.end()) return "-";
    if (it->is_string()) return it->get<std::string>();
    if (it->is_number()) return number(*it);
    return "-";
}

std::string byteCount(const json& value) {
    if (!value.is_number_unsigned()) return number(value);
    auto bytes = value.get<uint64_t>();
    if (bytes < 1024) return fmt::format("{}B", bytes);
    double scaled = static_cast<double>(bytes);
    const char* unit = "B";
    for (const char* next : {"KiB", "MiB", "GiB", "TiB", "PiB"}) {
        if (scaled < 1024.0) break;
        scaled /= 1024.0;
        unit = next;
    }
    return fmt::format("{:.1f}{}", scaled, unit);
}

// Left-aligned text columns and right-aligned number columns, two spaces apart.
class Table {
public:
    struct Column {
        std::string header;
        bool right;
    };

    explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

    void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

    void print(std::ostream& out, std::string_view indent) const {
        std::vector<size_t> widths;
        for (const Column& column : columns_) widths.push_back(column.header.size());
        for (const auto& row : rows_) {
            for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
        }
        auto line = [&](auto&& cell) {
            std::string text(indent);
            for (size_t i = 0; i < columns_.size(); ++i) {
                if (i > 0) text += "  ";
                std::string value = cell(i);
                std::string padding(widths[i] - value.size(), ' ');
                text += columns_[i].right ? padding + value : value + padding;
            }
            while (text.ends_with(' ')) text.pop_back();
            out << text << '\n';
        };
        line([&](size_t i) { return columns_[i].header; });
        for (const auto& row : rows_) line([&](size_t i) { return row[i]; });
    }

private:
    std::vector<Column> columns_;
    std::vector<std::vector<std::string>> rows_;
};

void printList(const json& response) {
    Table table({{"MOUNTPOINT", false}, {"IMAGE", false}, {"ENGINE", false}, {"BLOBS", true}});
    for (const json& image : arrayField(response, "images")) {
        if (!image.is_object()) continue;
        auto blobs = image.find("blobs");
        std::string count = blobs != image.end() && blobs->is_array() ? std::to_string(blobs->size()) : text(image, "blobs");
        table.add({text(image, "mountpoint"), text(image, image.contains("image") ? "image" : "bootstrap"),
                   text(image, "engine"), count});
    }
    table.print(std::cout, "");
}

// One status column: its header and how a blob's fields make its cell (nullopt: the blob lacks
// the fields, shown as "-"; a column no blob has is left out).
struct StatusColumn {
    Table::Column column;
    std::function<std::optional<std::string>(const json& blob)> cell;
};

std::vector<StatusColumn> knownColumns() {
    auto field = [](std::string key, std::string (*format)(const json&)) {
        return [key = std::move(key), format](const json& blob) -> std::optional<std::string> {
            const json* value = numberField(blob, key);
            if (value == nullptr) return std::nullopt;
            return format(*value);
        };
    };
    auto percent = [](const json& value) { return fmt::format("{:.0f}%", value.get<double>()); };
    auto chunks = [](const json& blob) -> std::optional<std::string> {
        const json* total = numberField(blob, "chunks");
        const json* present = numberField(blob, "chunks_present");
        if (total != nullptr && present != nullptr) return number(*present) + "/" + number(*total);
        if (total != nullptr || present != nullptr) return number(total != nullptr ? *total : *present);
        return std::nullopt;
    };
    auto id = [](const json& blob) -> std::optional<std::string> {
        auto it = blob.find("id");
        if (it == blob.end() || !it->is_string()) return std::nullopt;
        // Twelve hex digits tell blobs apart; --json has the whole id.
        return it->get<std::string>().substr(0, 12);
    };
    return {
        {{"BLOB", false}, id},
        {{"SIZE", true}, field("size", byteCount)},
        {{"CHUNKS", true}, chunks},
        {{"MISSES", true}, field("misses", number)},
        {{"FETCHED", true}, field("bytes_fetched", byteCount)},
        {{"FROM CACHE", true}, field("bytes_from_cache", byteCount)},
        {{"PREFETCH", true}, field("prefetch_done", +percent)},
        {{"ERRORS", true}, field("errors", number)},
    };
}

const std::set<std::string> kKnownBlobFields = {"id", "size", "chunks", "chunks_present", "misses",
                                                 "bytes_fetched", "bytes_from_cache", "prefetch_done", "errors"};
const std::set<std::string> kKnownImageFields = {"mountpoint", "bootstrap", "engine", "blobs"};

std::string header(std::string key) {
    std::ranges::replace(key, '_', ' ');
    std::ranges::transform(key, key.begin(), [](char c) { return static_cast<char>(std::toupper(c)); });
    return key;
}

void printImageStatus(const json& image) {
    std::string about = fmt::format("image {}, engine {}", text(image, image.contains("image") ? "image" : "bootstrap"),
                                    text(image, "engine"));
    for (const auto& [key, value] : image.items()) {
        if (!kKnownImageFields.contains(key) && value.is_number()) about += fmt::format(", {} {}", key, number(value));
    }
    std::cout << text(image, "mountpoint") << "  (" << about << ")\n";

    const json& blobs = arrayField(image, "blobs");
    std::vector<StatusColumn> columns = knownColumns();
    std::set<std::string> extra;
    for (const json& blob : blobs) {
        if (!blob.is_object()) continue;
        for (const auto& [key, value] : blob.items()) {
            if (!kKnownBlobFields.contains(key) && value.is_number()) extra.insert(key);
        }
    }
    for (const std::string& key : extra) {
        columns.push_back({{header(key), true}, [key](const json& blob) -> std::optional<std::string> {
                               const json* value = numberField(blob, key);
                               return value == nullptr ? std::nullopt : std::optional(number(*value));
                           }});
    }

    std::vector<std::vector<std::optional<std::string>>> cells;
    std::vector<bool> used(columns.size(), false);
    for (const json& blob : blobs) {
        if (!blob.is_object()) continue;
        auto& row = cells.emplace_back();
        for (size_t i = 0; i < columns.size(); ++i) {
            row.push_back(columns[i].cell(blob));
            used[i] = used[i] || row.back().has_value();
        }
    }
    std::vector<Table::Column> shown;
    for (size_t i = 0; i < columns.size(); ++i) {
        if (used[i]) shown.push_back(columns[i].column);
    }
    if (shown.empty()) {
        std::cout << "  no blobs\n";
        return;
    }
    Table table(std::move(shown));
    for (const auto& row : cells) {
        std::vector<std::string> texts;
        for (size_t i = 0; i < columns.size(); ++i) {
            if (used[i]) texts.push_back(row[i].value_or("-"));
        }
        table.add(std::move(texts));
    }
    table.print(std::cout, "  ");
}

// The network backends' counters: one row each.
void printBackendStatus(const json& backends) {
    auto cell = [](const json& backend, const char* key, std::string (*format)(const json&)) {
        const json* value = numberField(backend, key);
        return value == nullptr ? std::string("-") : format(*value);
    };
    auto millis = [](const json& us) { return us.is_number() ? fmt::format("{:.1f}ms", us.get<double>() / 1000) : "-"; };
    Table table({{"BACKEND", false}, {"REQUESTS", true}, {"BYTES", true}, {"RETRIES", true}, {"FAILURES", true},
                 {"TOKEN REFRESHES", true}, {"WHOLE BLOBS", true}, {"P50", true}, {"P99", true}});
    for (const json& b : backends) {
        if (!b.is_object()) continue;
        table.add({text(b, "backend"), cell(b, "requests", number), cell(b, "bytes", byteCount),
                   cell(b, "retries", number), cell(b, "failures", number), cell(b, "token_refreshes", number),
                   cell(b, "whole_blob_answers", number),
                   cell(b, "latency_p50_us", +millis), cell(b, "latency_p99_us", +millis)});
    }
    table.print(std::cout, "");
}

void printStatus(const json& response) {
    const json& images = arrayField(response, "images");
    if (images.empty()) std::cout << "no images mounted\n";
    bool first = true;
    for (const json& image : images) {
        if (!image.is_object()) continue;
        if (!first) std::cout << '\n';
        first = false;
        printImageStatus(image);
    }
    if (const auto cache = response.find("cache"); cache != response.end() && cache->is_object()) {
        const json& max = cache->value("max_size", json());
        std::cout << "\ncache: " << byteCount(cache->value("size", json())) << " of "
                  << (max.is_number_unsigned() && max.get<uint64_t>() == 0 ? "unbounded" : byteCount(max)) << ", "
                  << text(*cache, "removed_caches") << " unused caches removed, "
                  << byteCount(cache->value("freed_chunk_bytes", json())) << " of chunks freed\n";
    }
    const json& backends = arrayField(response, "backends");
    if (!backends.empty()) {
        std::cout << '\n';
        printBackendStatus(backends);
    }
}

// gc: what was removed and freed (or would be, with --dry-run).
void printGc(const json& response) {
    const bool dry = response.value("dry_run", false);
    const json& removed = arrayField(response, "removed");
    for (const json& cache : removed) {
        if (!cache.is_object()) continue;
        std::cout << (dry ? "would remove " : "removed ") << text(cache, "name") << " (" << byteCount(cache.value("bytes", json())) << ")\n";
    }
    std::cout << (dry ? "would free " : "freed ") << byteCount(response.value("chunk_bytes", json())) << " of chunks in "
              << text(response, "chunk_blobs") << " mounted blobs; cache " << byteCount(response.value("size_before", json()))
              << (dry ? " would be " : " -> ") << byteCount(response.value("size_after", json())) << "\n";
}

// The reference of `image` pinned to `manifest`, so the mount is of the manifest that was resolved
// even if the tag moves meanwhile; rafsd serves it from the bootstrap the resolve kept.
std::string pinned(const std::string& image, const std::string& manifest) {
    const registry::ImageReference ref = registry::ImageReference::parse(image);
    return ref.host + "/" + ref.repository + "@" + manifest;
}

// layer-store add: resolve, then the entries with the bootstrap layer's diff as the mount.
void addToLayerStore(const rafsd::ControlClient& client, const std::string& store_dir, const std::string& image,
                     const std::string& engine) {
    registry::ImageReference::parseTyped(image);
    const rafsd::LayerStore store(absolutePath(store_dir));
    store.checkExists();  // before the registry's round trips
    const json resolved = client.call(rafsd::ResolveRequest{image});
    const auto manifest = resolved.find("manifest");
    if (manifest == resolved.end() || !manifest->is_string()) rafs::fail("{}: rafsd named no manifest", image);
    const std::vector<rafsd::StoreLayer> layers = rafsd::StoreLayer::fromResolve(resolved, image);
    std::filesystem::path mountpoint;
    store.add(
        image, layers,
        [&](const std::filesystem::path& diff) {
            rafsd::MountRequest request;
            request.image = pinned(image, manifest->get<std::string>());
            request.mountpoint = diff;
            request.layer_store = true;
            if (!engine.empty()) {
                request.engine = rafsd::parseEngineKind(engine);
                if (!request.engine) rafs::fail("--engine '{}' is not one of {}", engine, rafsd::kEngineNames);
            }
            client.call(request);
            mountpoint = diff;
        },
        [&](const std::filesystem::path& diff) { client.call(rafsd::UmountRequest{diff}); });
    std::cout << "added " << image << " (" << manifest->get<std::string>() << ", " << layers.size() << " layers) to "
              << store.imageDir(image).string() << "; its tree is mounted on " << mountpoint.string() << "\n";
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"rafsctl: control a running rafsd (mount, umount, list, status, trace, gc, layer-store)"};
    app.require_subcommand(1);
    std::string socket = "/run/rafsd/api.sock";
    double timeout = 60;
    app.add_option("--socket", socket, "rafsd's control socket (default /run/rafsd/api.sock)");
    app.add_option("--timeout", timeout, "seconds to wait for rafsd's answer (default 60)")
        ->check(CLI::Range(0.001, 86400.0));

    std::string bootstrap, mountpoint, blob_dir, engine, domain_id, fsid;
    auto* mount = app.add_subcommand("mount", "mount an image (a bootstrap, or a reference to a RAFS image in a registry) on a directory");
    mount->add_option("--blob-dir", blob_dir, "directory of the image's blobs, named by blob id");
    mount->add_option("--engine", engine, "auto (default), fanotify or fscache");
    mount->add_option("--domain-id", domain_id, "fscache: share cache files of equal blobs within this domain");
    mount->add_option("--fsid", fsid, "fscache: the image's id (default: chosen by rafsd)");
    bool register_only = false;
    mount->add_flag("--register-only", register_only,
                    "fscache: serve the image but leave the mount to you; prints the mount command");
    mount->add_option("IMAGE", bootstrap,
                      "the image's bootstrap (image.boot); a path that does not exist is an image reference, "
                      "HOST[:PORT]/REPO[:TAG|@sha256:DIGEST], which rafsd resolves")
        ->required();
    mount->add_option("MOUNTPOINT", mountpoint, "directory to mount it on")->required();

    auto* umount = app.add_subcommand("umount", "unmount an image mounted by rafsd");
    umount->add_option("MOUNTPOINT", mountpoint, "where it is mounted")->required();

    auto* list = app.add_subcommand("list", "list mounted images");

    std::string store_dir, image;
    auto* layer_store = app.add_subcommand(
        "layer-store", "an image in containers-storage's additional layer store (podman, CRI-O): lazily mounted layers");
    layer_store->require_subcommand(1);
    auto* store_add = layer_store->add_subcommand(
        "add", "mount a RAFS image through rafsd and write its layers' entries (configure the store as DIR:ref)");
    auto* store_remove = layer_store->add_subcommand("remove", "unmount an image's layers and remove their entries");
    for (auto* sub : {store_add, store_remove}) {
        sub->add_option("--store", store_dir, "the additional layer store's directory")->required();
        sub->add_option("IMAGE", image, "HOST[:PORT]/REPO[:TAG|@sha256:DIGEST], as podman pull is given it")->required();
    }
    store_add->add_option("--engine", engine, "auto (default), fanotify or fscache");

    bool as_json = false;
    auto* status = app.add_subcommand("status", "show per-blob fetch and cache counters");
    status->add_option("MOUNTPOINT", mountpoint, "only this image");
    status->add_flag("--json", as_json, "print rafsd's answer as JSON");

    bool dry_run = false;
    auto* gc = app.add_subcommand("gc", "remove the caches of blobs no mounted image uses, and past the cache's low "
                                        "watermark free the least recently used chunks of mounted ones");
    gc->add_flag("--dry-run", dry_run, "only say what would be removed");

    std::string trace_out;
    auto* trace = app.add_subcommand(
        "trace", "print the files of a mounted image in the order first read since its mount (a prefetch list)");
    trace->add_option("MOUNTPOINT", mountpoint, "where the image is mounted")->required();
    trace->add_option("--output,-o", trace_out, "write the list to FILE instead of stdout");

    if (const auto exit_status = rafs::parseCommandLine(app, argc, argv, "rafsctl")) return *exit_status;
    try {
        // Not while the socket is absent: that is also what a rafsd that is not running looks like.
        rafsd::ControlClient client(socket, std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000.0)),
                                    rafsd::ControlClient::WaitForWorker::WhileRefused);
        if (mount->parsed()) {
            rafsd::MountRequest request;
            // A missing file is an image reference, as for rafsd mount: one that does not parse is
            // refused here as neither a file nor a reference, naming what does not parse.
            if (!std::filesystem::exists(bootstrap) && !bootstrap.starts_with("oci:")) {
                registry::ImageReference::ofArgument(bootstrap);  // a mistyped path is named as such
                request.image = bootstrap;
            } else {
                request.bootstrap = absolutePath(bootstrap);
            }
            request.mountpoint = absolutePath(mountpoint);
            if (!blob_dir.empty()) request.blob_dir = absolutePath(blob_dir);
            if (!engine.empty()) {
                request.engine = rafsd::parseEngineKind(engine);
                if (!request.engine) rafs::fail("--engine '{}' is not one of {}", engine, rafsd::kEngineNames);
            }
            if (!domain_id.empty()) request.domain_id = domain_id;
            if (!fsid.empty()) request.fsid = fsid;
            request.register_only = register_only;
            json response = client.call(request);
            const std::string what = request.image.value_or(request.bootstrap.string());
            auto command = response.find("mount_command");
            if (command != response.end() && command->is_string()) {
                std::cout << "registered " << what << "; mount it with:\n  "
                          << command->get<std::string>() << "\n";
                return 0;
            }
            auto chosen = response.find("engine");
            std::cout << "mounted " << what << " on " << request.mountpoint.string()
                      << (chosen != response.end() && chosen->is_string() ? " (" + chosen->get<std::string>() + ")" : "")
                      << "\n";
        } else if (umount->parsed()) {
            const json response = client.call(rafsd::UmountRequest{absolutePath(mountpoint)});
            if (response.value("still_in_use", false)) {
                std::cout << "unmounted " << absolutePath(mountpoint).string()
                          << "; still in use (lazily detached with a file open, or a copy in another mount namespace): "
                             "rafsd serves it until it is gone\n";
            }
        } else if (store_add->parsed()) {
            addToLayerStore(client, store_dir, image, engine);
        } else if (store_remove->parsed()) {
            const rafsd::LayerStore store(absolutePath(store_dir));
            const auto detached_under = [&](const std::filesystem::path& top) {
                json listed;
                try {
                    listed = client.call(rafsd::ListRequest{});
                } catch (const rafs::SystemError& e) {
                    // Nobody listening: no rafsd serves anything (entries may go while it is down).
                    if (e.code() == ENOENT || e.code() == ECONNREFUSED) return false;
                    throw;
                }
                const std::string prefix = top.string() + "/";
                for (const json& i : listed.value("images", json::array())) {
                    if (i.value("detached", false) && i.value("mountpoint", std::string()).starts_with(prefix)) return true;
                }
                return false;
            };
            store.remove(
                image,
                [&](const std::filesystem::path& diff) {
                    return client.call(rafsd::UmountRequest{diff}).value("still_in_use", false);
                },
                detached_under);
            std::cout << "removed " << image << " from " << store_dir << "\n";
        } else if (list->parsed()) {
            printList(client.call(rafsd::ListRequest{}));
        } else if (status->parsed()) {
            rafsd::StatusRequest request;
            if (!mountpoint.empty()) request.mountpoint = absolutePath(mountpoint);
            json response = client.call(request);
            if (as_json) std::cout << response.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
            else printStatus(response);
        } else if (gc->parsed()) {
            printGc(client.call(rafsd::GcRequest{dry_run}));
        } else if (trace->parsed()) {
            const json response = client.call(rafsd::TraceRequest{absolutePath(mountpoint)});
            const std::string text = response.contains("text") && response["text"].is_string()
                                         ? response["text"].get<std::string>() : std::string();
            if (trace_out.empty()) {
                std::cout << text;
            } else {
                std::ofstream out(trace_out, std::ios::trunc);
                out << text;
                out.close();
                if (!out) rafs::failErrno("writing " + trace_out);
                std::cerr << "rafsctl: " << response.value("files", 0) << " files written to " << trace_out << "\n";
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "rafsctl: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
