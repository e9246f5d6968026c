// mkrafs: builds, checks and unpacks RAFS v6 images. A thin command line over libbuilder.
#include "format/CommandLine.h"
#include "builder/commands/Build.h"
#include "builder/commands/Convert.h"
#include "builder/commands/InterruptCleanup.h"
#include "builder/commands/Inspect.h"
#include "builder/commands/Unpack.h"
#include "format/Codec.h"
#include "format/Digest.h"
#include "format/Error.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <iostream>

namespace {

// Accepts a byte count with an optional K/M/G suffix (KiB/MiB/GiB also), or 0x hex.
uint32_t parseSize(const std::string& text) {
    std::string_view s(text);
    uint64_t multiplier = 1;
    auto ends = [&](std::string_view suffix) {
        if (s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix) {
            s.remove_suffix(suffix.size());
            return true;
        }
        return false;
    };
    if (ends("KiB") || ends("K") || ends("k")) multiplier = 1024;
    else if (ends("MiB") || ends("M") || ends("m")) multiplier = 1024 * 1024;
    else if (ends("GiB") || ends("G") || ends("g")) multiplier = 1024 * 1024 * 1024;
    int base = 10;
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s.remove_prefix(2);
        base = 16;
    }
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
    if (ec == std::errc::result_out_of_range) rafs::fail("--chunk-size '{}': too large", text);
    if (ec != std::errc() || end != s.data() + s.size()) {
        rafs::fail("--chunk-size '{}': not a size (examples: 4096, 64K, 1M, 0x100000)", text);
    }
    if (value > UINT32_MAX / multiplier) rafs::fail("--chunk-size '{}': too large", text);
    const uint64_t bytes = value * multiplier;
    return static_cast<uint32_t>(bytes);
}

// The options `build` and `convert` share: how chunks are cut, compressed and digested.
struct BuildFlags {
    std::string chunk_size = "1M", compressor = "zstd", digester = "blake3", prefetch_list, chunk_dict;
    int64_t mtime = 0;
    CLI::Option* mtime_opt = nullptr;
    unsigned threads = 0;
    bool no_chunk_table = false;
    bool keep_blob_order = false;
    int compression_level = 0;

    void add(CLI::App* c) {
        c->add_option("--chunk-size", chunk_size, "chunk size, a power of two from 4K to 16M (default 1M)");
        c->add_option("--compressor", compressor, "none, zstd (default) or lz4_block");
        c->add_option("--compression-level", compression_level, "codec level (0 = default)");
        c->add_option("--digester", digester, "blake3 (default) or sha256");
        c->add_option("--prefetch-list", prefetch_list, "file of absolute paths to prefetch first");
        c->add_flag("--keep-blob-order", keep_blob_order,
                    "store chunks in source order, the prefetch list's files not first: the blobs (and their ids) stay "
                    "those of a build without the list, only the bootstrap differs");
        mtime_opt = c->add_option("--mtime", mtime, "set every entry's mtime to SECONDS (reproducible builds)");
        c->add_option("--threads", threads, "compression threads (default: one per CPU)");
        c->add_option("--chunk-dict", chunk_dict,
                      "reference chunks another RAFS image stores instead of storing them again (build: its bootstrap; "
                      "convert: its bootstrap or image reference)");
        c->add_flag("--no-chunk-table", no_chunk_table,
                    "omit Nydus's chunk info table (smaller bootstrap; nydusd FUSE mode and nydus-image merge need it)");
    }
    void apply(rafs::build::BuildOptions& build) const {
        build.chunk_size = parseSize(chunk_size);
        build.compressor = rafs::parseCompressor(compressor);
        build.digester = rafs::parseDigester(digester);
        build.compression_level = compression_level;
        if (!prefetch_list.empty()) build.prefetch_list = prefetch_list;
        if (!chunk_dict.empty()) build.chunk_dict = chunk_dict;
        if (mtime_opt->count() > 0) build.mtime = mtime;
        build.threads = threads;
        build.chunk_table = !no_chunk_table;
        build.prefetch_first = !keep_blob_order;
    }
};

}  // namespace

int main(int argc, char** argv) {
    try {
        rafs::build::installInterruptCleanup();
    } catch (const std::exception& e) {
        std::cerr << "mkrafs: " << e.what() << "\n";
        return 1;
    }
    CLI::App app{"mkrafs: build, check and unpack RAFS v6 (Nydus-compatible EROFS) images"};
    app.require_subcommand(1);

    rafs::build::BuildOptions build;
    BuildFlags build_flags;
    auto* b = app.add_subcommand("build", "build DIR/image.boot and DIR/blobs/<blob-id> from sources");
    b->add_option("--output,-o", build.output, "output directory: new or empty")->required();
    build_flags.add(b);
    b->add_option("SOURCE", build.sources, "directory, or tar layer (plain, gzip, zstd; - for stdin), lowest first")
        ->required();

    rafs::build::ConvertOptions convert;
    BuildFlags convert_flags;
    std::string platform;
    auto* c = app.add_subcommand("convert", "convert an OCI image into a RAFS v6 image (Nydus-compatible) and push it");
    c->add_option("SOURCE", convert.source, "HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]")->required();
    c->add_option("TARGET", convert.target, "HOST[:PORT]/REPO[:TAG] or oci:DIR[:TAG]")->required();
    c->add_option("--authfile", convert.authfile, "docker config.json with credentials (default $DOCKER_CONFIG/config.json)");
    c->add_option("--cert-dir", convert.cert_dir, "per-host CA and client certificates, docker's certs.d layout (default /etc/docker/certs.d)");
    c->add_flag("--plain-http", convert.plain_http, "speak http:// to registries (never the default)");
    auto* platform_opt = c->add_option("--platform", platform, "OS/ARCH[/VARIANT] to convert from an index (default: this host's)");
    c->add_flag("--all-platforms", convert.all_platforms, "convert every platform of an index");
    c->add_flag("--merge-index", convert.merge_index, "push an index holding the original and the RAFS manifests");
    c->add_option("--mount-from", convert.mount_from,
                  "a repository of the target's registry that may hold blobs already (cross-repository mount); repeatable");
    c->add_option("--parallel-layers", convert.parallel_layers, "layers downloading at once (default 4)");
    c->add_option("--work-dir", convert.work_dir, "where output blobs are staged (default $TMPDIR, else /var/tmp)");
    convert_flags.add(c);
    std::string prefetch_trace;
    auto* trace_opt = c->add_option("--prefetch-trace", prefetch_trace,
                                    "a start trace (rafsctl trace) written into the prefetch table: the files read "
                                    "at a start, in that order")
                          ->excludes("--prefetch-list");

    rafs::build::InspectOptions inspect;
    auto* i = app.add_subcommand("inspect", "print and check a bootstrap and its blobs");
    i->add_option("BOOTSTRAP", inspect.bootstrap, "image.boot (or a blob with an inline bootstrap)")->required();
    i->add_option("--blob-dir", inspect.blob_dir, "directory of blobs named by blob id");
    i->add_flag("--verbose,-v", inspect.verbose, "list every file");

    rafs::build::UnpackOptions unpack;
    auto* u = app.add_subcommand("unpack", "write blobs' uncompressed address spaces or a tar of the tree");
    u->add_option("BOOTSTRAP", unpack.bootstrap, "image.boot")->required();
    u->add_option("--blob-dir", unpack.blob_dir, "directory of blobs named by blob id")->required();
    u->add_option("--raw-dir", unpack.raw_dir, "write <raw-dir>/<blob-id> for a daemon-less kernel mount");
    u->add_option("--tar", unpack.tar, "write the tree as a tar file (- for stdout)");

    if (const auto exit_status = rafs::parseCommandLine(app, argc, argv, "mkrafs")) return *exit_status;
    try {
        if (b->parsed()) {
            build_flags.apply(build);
            rafs::build::build(build, std::cerr);
        } else if (c->parsed()) {
            convert_flags.apply(convert.build);
            if (trace_opt->count() > 0) convert.build.prefetch_list = prefetch_trace;
            if (platform_opt->count() > 0) convert.platform = platform;
            rafs::build::convert(convert, std::cerr);
        } else if (i->parsed()) {
            rafs::build::inspect(inspect, std::cout);
        } else if (u->parsed()) {
            if (unpack.raw_dir.empty() && unpack.tar.empty()) rafs::fail("unpack needs --raw-dir or --tar");
            rafs::build::unpack(unpack);
        }
    } catch (const std::exception& e) {
        std::cerr << "mkrafs: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
