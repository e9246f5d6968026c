// The control protocol between rafsctl and rafsd: newline-delimited JSON over a unix stream
// socket (default /run/rafsd/api.sock). Each request is one line holding one JSON object; rafsd
// answers each with one line, in order, and keeps the connection open for more.
//
// Requests (paths are absolute; fields not listed are refused):
//   {"op":"mount","bootstrap":"/abs/image.boot","mountpoint":"/abs/mnt",
//    "blob_dir":"/abs/blobs", "engine":"auto|fanotify|fscache", "domain_id":"d", "fsid":"f",
//    "register_only":true}
//        blob_dir, engine, domain_id, fsid and register_only (fscache: no mount(2)) are optional.
//   {"op":"mount","image":"host:port/repo:tag","mountpoint":"/abs/mnt", ...}
//        a RAFS image in a registry instead of a bootstrap file (no blob_dir then).
//   {"op":"umount","mountpoint":"/abs/mnt"}
//   {"op":"list"}
//   {"op":"status"}  or  {"op":"status","mountpoint":"/abs/mnt"}
//   {"op":"trace","mountpoint":"/abs/mnt"}
//   {"op":"gc"}  or  {"op":"gc","dry_run":true}
//        collects the cache now (CacheCollector.h): removes every cache no mounted image uses and,
//        above the low watermark of cache.max_size, frees chunks of mounted blobs; a dry run only
//        says what it would do.
//   {"op":"resolve","image":"host:port/repo:tag"}
//        resolves a RAFS image in its registry and keeps its bootstrap, as a mount would, without
//        mounting it: a mount of image@manifest that follows is served from the kept copy.
//
// Responses: {"ok":true, ...fields} or {"ok":false,"error":"one line"}. The fields are:
//   mount:  {"mountpoint":"/abs/mnt","engine":"fanotify"}            engine = the one chosen
//           register_only adds "mount_command":"mount -t erofs -o fsid=f none /abs/mnt"
//   umount: {}, or {"still_in_use":true}: unmounted, but a lazily detached copy with a file open,
//           or a copy in another mount namespace, still reads it (fanotify): served until it is gone
//   list:   {"images":[{"mountpoint":"/abs/mnt","bootstrap":"/abs/image.boot",
//                       "engine":"fanotify","blobs":3}]}                blobs = how many
//           an image mounted by reference adds "image":"host:port/repo:tag" and
//           "manifest":"sha256:..."; its bootstrap is the copy in rafsd's state dir; an image
//           unmounted but still in use adds "detached":true, its mountpoint "/abs/mnt (detached N)"
//           (status too)
//   status: {"images":[{"mountpoint","bootstrap","engine","blobs":[
//              {"id":"<sha256 hex>",         the blob id
//               "size":N,                    bytes of its uncompressed address space
//               "chunks":N,                  chunks in the blob
//               "chunks_present":N,          of those, present in the cache file
//               "misses":N,                  kernel reads that had to wait for a fetch
//               "bytes_fetched":N,           bytes read from the backend
//               "bytes_from_cache":N,        bytes of kernel reads that were already present
//               "prefetch_done":P,           prefetch progress in percent (0-100), absent
//                                            when prefetch is off
//               "errors":N}]}]}              failed fetches and failed verifications
//   Numeric fields beyond these may appear; rafsctl shows every numeric field it gets.
//   trace:  {"text":"# ...\n/usr/bin/bash\n...","files":N,"chunks":N,"saved":"/state/traces/x.list"}
//           the files of the image in the order their chunks were first read since its mount,
//           as a prefetch list (StartTrace.h); also written to "saved" ("" when no file was
//           read and an earlier trace is kept instead)
//   gc:     {"dry_run":false,"size_before":N,"size_after":N,   bytes of the cache dir
//            "removed":[{"name":"blob <id>","bytes":N}],      unused caches removed
//            "chunk_bytes":N,"chunk_blobs":N}                 chunks of mounted blobs freed
//   resolve: {"image":"host:port/repo:tag","manifest":"sha256:...","layers":[
//              {"digest":"sha256:...","size":N,"media_type":"...",
//               "role":"blob"|"bootstrap",    a Nydus data blob, or the bootstrap layer (last)
//               "diff_id":"sha256:..."}]}     the digest of its uncompressed form, as the image
//                                             config lists it; absent when the manifest does not
//                                             say (a bootstrap layer without the
//                                             containerd.io/uncompressed annotation)
//
// A request line longer than kMaxRequestBytes gets an error response, then the connection closes.
#pragma once

#include "daemon/api/EngineKind.h"
#include "format/UniqueFd.h"

#include <sys/un.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace rafsd {

inline constexpr size_t kMaxRequestBytes = 1 << 20;
// Status of many images is larger than any request, but still bounded so a broken peer cannot
// make rafsctl eat memory.
inline constexpr size_t kMaxResponseBytes = 64 << 20;

struct MountRequest {
    std::filesystem::path bootstrap;  // empty when `image` is given
    std::filesystem::path mountpoint;
    std::optional<std::filesystem::path> blob_dir;
    std::optional<EngineKind> engine;
    std::optional<std::string> domain_id;
    std::optional<std::string> fsid;
    // fscache only: register the image and answer the kernel for it, but leave mount(2) to the
    // user (`mount -t erofs -o fsid=...`); the response carries the command.
    bool register_only = false;
    // An image reference (HOST[:PORT]/REPO[:TAG|@DIGEST]), checked by rafsd.
    std::optional<std::string> image = std::nullopt;
    // The mount point is the bootstrap layer's `diff` of an additional layer store entry
    // (LayerStore.h): rafsd keeps the entry's markers in step with the mount, and mounts it again
    // when it starts and finds it gone (a stop, a reboot).
    bool layer_store = false;
    bool operator==(const MountRequest&) const = default;
};

struct UmountRequest {
    std::filesystem::path mountpoint;
    bool operator==(const UmountRequest&) const = default;
};

struct ListRequest {
    bool operator==(const ListRequest&) const = default;
};

struct StatusRequest {
    std::optional<std::filesystem::path> mountpoint;  // absent: every image
    bool operator==(const StatusRequest&) const = default;
};

struct TraceRequest {
    std::filesystem::path mountpoint;
    bool operator==(const TraceRequest&) const = default;
};

struct GcRequest {
    bool dry_run = false;
    bool operator==(const GcRequest&) const = default;
};

// Resolves an image reference (HOST[:PORT]/REPO[:TAG|@DIGEST]) to its RAFS manifest's layers.
struct ResolveRequest {
    std::string image;
    bool operator==(const ResolveRequest&) const = default;
};

using Request = std::variant<MountRequest, UmountRequest, ListRequest, StatusRequest, TraceRequest,
                             GcRequest, ResolveRequest>;

// Parses and validates one request line (without its newline); throws rafs::Error saying what is
// wrong, e.g. "mount request has no 'mountpoint'" or "bootstrap: \"a.boot\" is not an absolute path".
Request parseRequest(std::string_view line);

// The request as one line of JSON, without the newline.
std::string formatRequest(const Request& request);

// {"ok":true} plus the fields of `fields` (a JSON object, or null for none), as one line without
// the newline. Throws rafs::Error if `fields` is neither.
std::string okResponse(const nlohmann::json& fields);
// {"ok":false,"error":message}, with line breaks in message turned into spaces.
std::string errorResponse(std::string_view message);

// Parses a response line: returns the response object when it says ok, throws rafs::Error with
// rafsd's message when it does not, or a message of its own when the line is not a response.
nlohmann::json parseResponse(std::string_view line);

// The address of a unix socket path; throws rafs::Error if the path does not fit in sun_path.
sockaddr_un unixAddress(const std::filesystem::path& path);

}  // namespace rafsd
