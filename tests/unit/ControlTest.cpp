#include "format/Error.h"
#include "daemon/api/ControlClient.h"
#include "daemon/api/ControlProtocol.h"
#include "daemon/api/ControlServer.h"

#include <catch2/catch.hpp>
#include <thread>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

using nlohmann::json;
using rafsd::ControlServer;
using rafsd::MountRequest;
using rafsd::parseRequest;
using rafsd::Request;
using Catch::Matchers::StartsWith;

namespace {

struct TempDir {
    TempDir() {
        char pattern[] = "/tmp/rafsd-api-XXXXXX";
        REQUIRE(::mkdtemp(pattern) != nullptr);
        path = pattern;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::filesystem::path path;
};

// Records requests; mount of /fail throws, mount of /block waits until release().
class FakeHandler : public rafsd::ControlHandler {
public:
    json mount(const MountRequest& request) override {
        std::unique_lock lock(mutex_);
        mounts_.push_back(request);
        if (request.mountpoint == "/fail") throw rafs::Error("mount failed: boom\nsecond line");
        if (request.mountpoint == "/block") {
            blocked_ = true;
            changed_.notify_all();
            changed_.wait(lock, [&] { return released_; });
        }
        return {{"mountpoint", request.mountpoint.string()}, {"engine", "fanotify"}};
    }
    json umount(const rafsd::UmountRequest& request) override {
        std::lock_guard lock(mutex_);
        umounts_.push_back(request.mountpoint);
        return nullptr;
    }
    json list() override {
        std::lock_guard lock(mutex_);
        return list_;
    }
    json status(const rafsd::StatusRequest& request) override {
        if (request.mountpoint) throw rafs::Error(fmt::format("{} is not mounted", request.mountpoint->string()));
        std::lock_guard lock(mutex_);
        return status_;
    }
    json trace(const rafsd::TraceRequest& request) override {
        return {{"text", "# trace of " + request.mountpoint.string() + "\n/usr/bin/bash\n"}, {"files", 1}, {"chunks", 2}};
    }
    json gc(const rafsd::GcRequest& request) override { return {{"dry_run", request.dry_run}}; }
    json resolve(const rafsd::ResolveRequest& request) override {
        return {{"image", request.image}, {"manifest", "sha256:" + std::string(64, 'a')}, {"layers", json::array()}};
    }

    void waitUntilBlocked() {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return blocked_; });
    }
    void release() {
        std::lock_guard lock(mutex_);
        released_ = true;
        changed_.notify_all();
    }

    // The test thread's view; a lock, since the server's threads write them.
    std::vector<MountRequest> mounts() {
        std::lock_guard lock(mutex_);
        return mounts_;
    }
    std::vector<std::filesystem::path> umounts() {
        std::lock_guard lock(mutex_);
        return umounts_;
    }
    void setList(json response) {
        std::lock_guard lock(mutex_);
        list_ = std::move(response);
    }
    void setStatus(json response) {
        std::lock_guard lock(mutex_);
        status_ = std::move(response);
    }

private:
    std::vector<MountRequest> mounts_;
    std::vector<std::filesystem::path> umounts_;
    json list_ = {{"images", json::array()}};
    json status_ = {{"images", json::array()}};
    std::mutex mutex_;
    std::condition_variable changed_;
    bool blocked_ = false;
    bool released_ = false;
};

// A raw client, to send what rafsctl never would.
class RawClient {
public:
    explicit RawClient(const std::filesystem::path& socket) : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        REQUIRE(fd_.get() >= 0);
        sockaddr_un address = rafsd::unixAddress(socket);
        REQUIRE(::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    }

    int fd() const { return fd_.get(); }

    // Sends what the peer takes; false once it stopped reading (EPIPE, ECONNRESET).
    bool send(std::string_view data) {
        while (!data.empty()) {
            ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return false;
            data.remove_prefix(static_cast<size_t>(n));
        }
        return true;
    }

    // The next line, or nullopt at end of stream; fails the test after 10 s.
    std::optional<std::string> readLine() {
        for (;;) {
            if (auto end = buffer_.find('\n'); end != std::string::npos) {
                std::string line = buffer_.substr(0, end);
                buffer_.erase(0, end + 1);
                return line;
            }
            pollfd fd = {fd_.get(), POLLIN, 0};
            REQUIRE(::poll(&fd, 1, 10000) == 1);
            char chunk[4096];
            ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
            if (n < 0 && errno == ECONNRESET) return std::nullopt;
            REQUIRE(n >= 0);
            if (n == 0) return std::nullopt;
            buffer_.append(chunk, static_cast<size_t>(n));
        }
    }

    json ask(const std::string& line) {
        REQUIRE(send(line + "\n"));
        auto response = readLine();
        REQUIRE(response);
        return json::parse(*response);
    }

    void shutdownWrite() { REQUIRE(::shutdown(fd_.get(), SHUT_WR) == 0); }

private:
    rafs::UniqueFd fd_;
    std::string buffer_;
};

json errorJson(const std::string& message) { return {{"ok", false}, {"error", message}}; }

// A unix socket bound to `path` and, if `listening`, listening: a stand-in for another rafsd.
rafs::UniqueFd boundSocket(const std::filesystem::path& path, bool listening) {
    rafs::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.get() >= 0);
    sockaddr_un address = rafsd::unixAddress(path);
    REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    if (listening) REQUIRE(::listen(fd.get(), 4) == 0);
    return fd;
}

std::filesystem::path buildRoot() {
    return std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path().parent_path();
}

struct Run {
    int status;
    std::string output;
};

// Runs the built rafsctl with `args`, stdout and stderr together.
Run rafsctl(const std::string& args, const std::filesystem::path& cwd) {
    std::string command = fmt::format("cd '{}' && '{}' {} 2>&1", cwd.string(), (buildRoot() / "daemon/rafsctl").string(), args);
    FILE* pipe = ::popen(command.c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::string output;
    char chunk[4096];
    for (size_t n; (n = std::fread(chunk, 1, sizeof chunk, pipe)) > 0;) output.append(chunk, n);
    int status = ::pclose(pipe);
    REQUIRE(WIFEXITED(status));
    return {WEXITSTATUS(status), output};
}

}  // namespace

TEST_CASE("control requests parse into typed structs", "[api]") {
    Request request = parseRequest(
        R"({"op":"mount","bootstrap":"/images/a.boot","mountpoint":"/mnt/a","blob_dir":"/blobs",)"
        R"("engine":"fscache","domain_id":"shared-1","fsid":"sha256:ab.c_d"})");
    REQUIRE(std::holds_alternative<MountRequest>(request));
    MountRequest expected{"/images/a.boot", "/mnt/a", "/blobs", rafsd::EngineKind::Fscache, "shared-1", "sha256:ab.c_d", false, {}};
    CHECK(std::get<MountRequest>(request) == expected);

    MountRequest minimal{"/a.boot", "/mnt", {}, {}, {}, {}, false, {}};
    CHECK(std::get<MountRequest>(parseRequest(R"({"mountpoint":"/mnt","op":"mount","bootstrap":"/a.boot"})")) == minimal);
    CHECK(std::get<rafsd::UmountRequest>(parseRequest(R"({"op":"umount","mountpoint":"/mnt"})")).mountpoint == "/mnt");
    CHECK(std::holds_alternative<rafsd::ListRequest>(parseRequest(R"( {"op":"list"} )")));
    CHECK(std::get<rafsd::StatusRequest>(parseRequest(R"({"op":"status"})")).mountpoint == std::nullopt);
    CHECK(std::get<rafsd::StatusRequest>(parseRequest(R"({"op":"status","mountpoint":"/m"})")).mountpoint == "/m");
    CHECK(std::get<rafsd::ResolveRequest>(parseRequest(R"({"op":"resolve","image":"h:1/r:t"})")).image == "h:1/r:t");
    CHECK(std::get<rafsd::GcRequest>(parseRequest(R"({"op":"gc","dry_run":true})")).dry_run);
    CHECK_FALSE(std::get<rafsd::GcRequest>(parseRequest(R"({"op":"gc"})")).dry_run);
    MountRequest registered = minimal;
    registered.register_only = true;
    CHECK(std::get<MountRequest>(parseRequest(
              R"({"op":"mount","bootstrap":"/a.boot","mountpoint":"/mnt","register_only":true})")) == registered);

    MountRequest store_diff = minimal;
    store_diff.layer_store = true;
    CHECK(std::get<MountRequest>(parseRequest(
              R"({"op":"mount","bootstrap":"/a.boot","mountpoint":"/mnt","layer_store":true})")) == store_diff);
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a","mountpoint":"/m","layer_store":1})"),
                      "layer_store: 1 is not true or false");

    for (const Request& r : {Request(expected), Request(minimal), Request(registered), Request(store_diff),
                             Request(rafsd::UmountRequest{"/m"}),
                             Request(rafsd::ListRequest{}), Request(rafsd::StatusRequest{}),
                             Request(rafsd::StatusRequest{"/m"}), Request(rafsd::TraceRequest{"/m"}),
                             Request(rafsd::GcRequest{}), Request(rafsd::GcRequest{true}),
                             Request(rafsd::ResolveRequest{"h:1/r@sha256:ab"})}) {
        std::string line = rafsd::formatRequest(r);
        INFO(line);
        CHECK(line.find('\n') == std::string::npos);
        CHECK(parseRequest(line) == r);
    }
}

TEST_CASE("control request errors", "[api]") {
    CHECK_THROWS_WITH(parseRequest("mount /a /b"), StartsWith("request is not valid JSON: parse error at line 1, column 1"));
    CHECK_THROWS_WITH(parseRequest(R"({"op":"list")"), StartsWith("request is not valid JSON: "));
    CHECK_THROWS_WITH(parseRequest(""), StartsWith("request is not valid JSON: "));
    CHECK_THROWS_WITH(parseRequest("[\"list\"]"), "request is not a JSON object");
    CHECK_THROWS_WITH(parseRequest("{}"), "request has no 'op'");
    CHECK_THROWS_WITH(parseRequest(R"({"op":5})"), "op: 5 is not one of mount, umount, list, status, trace, gc, resolve");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"remount"})"), "op: \"remount\" is not one of mount, umount, list, status, trace, gc, resolve");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a.boot"})"), "mount request has no 'mountpoint'");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"umount"})"), "umount request has no 'mountpoint'");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"resolve"})"), "resolve request has no 'image'");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"resolve","image":""})"), "image: \"\" is not an image reference");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"resolve","image":"h/r","mountpoint":"/m"})"),
                      "unknown field 'mountpoint' in resolve request");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"a.boot","mountpoint":"/m"})"),
                      "bootstrap: \"a.boot\" is not an absolute path");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a","mountpoint":5})"), "mountpoint: 5 is not a string");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a","mountpoint":"/m","blob_dir":["/b"]})"),
                      "blob_dir: an array is not a string");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a","mountpoint":"/m","engine":"fuse"})"),
                      "engine: \"fuse\" is not one of auto, fanotify, fscache");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a","mountpoint":"/m","fsid":"a,b"})"),
                      "fsid: \"a,b\" is not a name of 1 to 128 letters, digits, '.', '_', ':' or '-', not . or ..");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a","mountpoint":"/m","domain_id":""})"),
                      "domain_id: \"\" is not a name of 1 to 128 letters, digits, '.', '_', ':' or '-', not . or ..");
    for (const char* dots : {".", ".."}) {
        CHECK_THROWS_WITH(parseRequest(fmt::format(R"({{"op":"mount","bootstrap":"/a","mountpoint":"/m","fsid":"{}"}})", dots)),
                          fmt::format("fsid: \"{}\" is not a name of 1 to 128 letters, digits, '.', '_', ':' or '-', not . or ..",
                                      dots));
    }
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a\u0000b","mountpoint":"/m"})"),
                      "bootstrap: \"/a\\u0000b\" is not an absolute path");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a","mountpoint":"/m","register_only":"yes"})"),
                      "register_only: \"yes\" is not true or false");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"gc","dry_run":1})"), "dry_run: 1 is not true or false");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"status","mountpoint":"m"})"), "mountpoint: \"m\" is not an absolute path");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"list","verbose":true})"), "unknown field 'verbose' in list request");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","bootstrap":"/a","mountpoint":"/m","blobdir":"/b"})"),
                      "unknown field 'blobdir' in mount request");

    // Huge or deeply nested values make short messages and no deep recursion.
    std::string longPath(100000, 'x');
    CHECK_THROWS_WITH(parseRequest(R"({"op":"umount","mountpoint":")" + longPath + "\"}"),
                      "mountpoint: \"" + std::string(76, 'x') + "... is not an absolute path");
    std::string deep = std::string(100000, '[') + std::string(100000, ']');
    CHECK_THROWS_WITH(parseRequest(R"({"op":"umount","mountpoint":)" + deep + "}"), "mountpoint: an array is not a string");
    CHECK_THROWS_WITH(parseRequest(std::string(100000, '[')), StartsWith("request is not valid JSON: "));
    CHECK_THROWS_WITH(parseRequest("\"\xff\""), StartsWith("request is not valid JSON: "));
}

TEST_CASE("control responses", "[api]") {
    CHECK(json::parse(rafsd::okResponse(nullptr)) == json{{"ok", true}});
    CHECK(json::parse(rafsd::okResponse({{"engine", "fscache"}, {"ok", false}})) == json{{"ok", true}, {"engine", "fscache"}});
    CHECK_THROWS_WITH(rafsd::okResponse(5), "internal error: the response is 5, not a JSON object");
    CHECK(json::parse(rafsd::errorResponse("a\nb\r\nc")) == errorJson("a b  c"));
    // Invalid UTF-8 from a handler's message must not break the response.
    CHECK(json::parse(rafsd::errorResponse("bad \xff byte"))["error"] == "bad \xef\xbf\xbd byte");

    CHECK(rafsd::parseResponse(R"({"ok":true,"images":[]})") == json{{"ok", true}, {"images", json::array()}});
    CHECK_THROWS_WITH(rafsd::parseResponse(R"({"ok":false,"error":"no such mount\nreally"})"), "no such mount really");
    CHECK_THROWS_WITH(rafsd::parseResponse(R"({"ok":false})"), "rafsd reported an error without a message");
    CHECK_THROWS_WITH(rafsd::parseResponse("garbage"), "malformed response from rafsd: garbage");
    CHECK_THROWS_WITH(rafsd::parseResponse(R"({"ok":"yes"})"), "malformed response from rafsd: {\"ok\":\"yes\"}");
    CHECK_THROWS_WITH(rafsd::parseResponse("[1]"), "malformed response from rafsd: [1]");

    CHECK_THROWS_WITH(rafsd::unixAddress(std::string(108, 'a')),
                      fmt::format("socket path '{}' must be 1 to 107 bytes long", std::string(108, 'a')));
    CHECK(std::string(rafsd::unixAddress(std::string(107, 'a')).sun_path) == std::string(107, 'a'));
}

TEST_CASE("control server answers requests", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "run/rafsd/api.sock";
    FakeHandler handler;
    json images = {{{"mountpoint", "/mnt/a"}, {"bootstrap", "/a.boot"}}};
    handler.setList({{"images", images}});
    ControlServer server = ControlServer::bind(socket, handler);
    CHECK(!server.adopted());

    struct stat st {};
    REQUIRE(::stat(socket.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0600);
    REQUIRE(::stat(socket.parent_path().c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0755);

    RawClient client(socket);
    CHECK(client.ask(R"({"op":"list"})") == json{{"ok", true}, {"images", images}});
    CHECK(client.ask(R"({"op":"mount","bootstrap":"/a.boot","mountpoint":"/mnt/a","engine":"fanotify"})") ==
          json{{"ok", true}, {"mountpoint", "/mnt/a"}, {"engine", "fanotify"}});
    REQUIRE(handler.mounts().size() == 1);
    CHECK(handler.mounts()[0] == MountRequest{"/a.boot", "/mnt/a", {}, rafsd::EngineKind::Fanotify, {}, {}, false, {}});
    CHECK(client.ask(R"({"op":"umount","mountpoint":"/mnt/a"})") == json{{"ok", true}});
    CHECK(handler.umounts() == std::vector<std::filesystem::path>{"/mnt/a"});

    // Handler errors become one-line error responses; the connection goes on.
    CHECK(client.ask(R"({"op":"mount","bootstrap":"/a.boot","mountpoint":"/fail"})") ==
          errorJson("mount failed: boom second line"));
    CHECK(client.ask(R"({"op":"status","mountpoint":"/nowhere"})") == errorJson("/nowhere is not mounted"));

    // Malformed requests too.
    json reply = client.ask("{\"op\":\"list\"");
    CHECK(reply["ok"] == false);
    CHECK_THAT(reply["error"].get<std::string>(), StartsWith("request is not valid JSON: "));
    CHECK_THAT(client.ask("")["error"].get<std::string>(), StartsWith("request is not valid JSON: "));
    CHECK_THAT(client.ask("\x01\xff\xfe garbage")["error"].get<std::string>(), StartsWith("request is not valid JSON: "));
    CHECK(client.ask(R"({"op":"umount","mountpoint":"relative"})") ==
          errorJson("mountpoint: \"relative\" is not an absolute path"));
    CHECK(client.ask(R"({"op":"status"})") == json{{"ok", true}, {"images", json::array()}});

    // Several requests in one write are answered in order; \r\n line ends work too.
    REQUIRE(client.send("{\"op\":\"list\"}\r\n{\"op\":\"bogus\"}\n{\"op\":\"status\"}\n"));
    CHECK(json::parse(*client.readLine())["ok"] == true);
    CHECK(json::parse(*client.readLine())["ok"] == false);
    CHECK(json::parse(*client.readLine())["ok"] == true);

    // A last request without its newline is answered before the connection closes.
    REQUIRE(client.send(R"({"op":"list"})"));
    client.shutdownWrite();
    CHECK(json::parse(*client.readLine())["ok"] == true);
    CHECK(client.readLine() == std::nullopt);

    server.stop();
    CHECK(!std::filesystem::exists(socket));
    server.stop();
}

TEST_CASE("control server limits request lines to 1 MiB", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;
    ControlServer server = ControlServer::bind(socket, handler);

    // Exactly the limit is fine (JSON may be padded with spaces).
    std::string request = R"({"op":"list"})";
    request.resize(rafsd::kMaxRequestBytes, ' ');
    RawClient client(socket);
    CHECK(client.ask(request)["ok"] == true);

    // One byte more is refused and the connection closed, whether or not a newline follows.
    for (size_t extra : {size_t{1}, size_t{3} << 20}) {
        RawClient big(socket);
        std::string line(rafsd::kMaxRequestBytes + extra, 'x');
        big.send(line + "\n");  // the server may stop reading before it all went out
        auto response = big.readLine();
        REQUIRE(response);
        CHECK(json::parse(*response) == errorJson("request line longer than 1048576 bytes"));
        CHECK(big.readLine() == std::nullopt);
    }
    // The server is still there.
    CHECK(client.ask(R"({"op":"list"})")["ok"] == true);
}

TEST_CASE("control server serves clients concurrently", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;
    ControlServer server = ControlServer::bind(socket, handler);

    // A slow mount on one connection does not hold up another.
    RawClient slow(socket);
    REQUIRE(slow.send(R"({"op":"mount","bootstrap":"/a.boot","mountpoint":"/block"})"
                      "\n"));
    handler.waitUntilBlocked();
    RawClient quick(socket);
    // And a half-sent request on a third does not either.
    RawClient partial(socket);
    REQUIRE(partial.send(R"({"op":)"));
    CHECK(quick.ask(R"({"op":"list"})")["ok"] == true);
    handler.release();
    CHECK(json::parse(*slow.readLine()) == json{{"ok", true}, {"mountpoint", "/block"}, {"engine", "fanotify"}});
    REQUIRE(partial.send(R"("status"})"
                         "\n"));
    CHECK(json::parse(*partial.readLine())["ok"] == true);

    // Many clients at once, each with several requests.
    std::vector<RawClient> clients;
    for (int i = 0; i < 20; ++i) clients.emplace_back(socket);
    for (auto& client : clients) REQUIRE(client.send("{\"op\":\"list\"}\n{\"op\":\"status\"}\n"));
    for (auto& client : clients) {
        CHECK(json::parse(*client.readLine())["ok"] == true);
        CHECK(json::parse(*client.readLine())["ok"] == true);
    }
}

TEST_CASE("control server: connections beyond its limit wait for a place", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;
    ControlServer server = ControlServer::bind(socket, handler);
    std::vector<RawClient> clients;
    for (size_t i = 0; i < ControlServer::kMaxConnections; ++i) {
        clients.emplace_back(socket);
        // Answered: its connection is being served.
        CHECK(clients.back().ask(R"({"op":"list"})")["ok"] == true);
    }
    RawClient extra(socket);
    REQUIRE(extra.send("{\"op\":\"list\"}\n"));
    pollfd waiting = {extra.fd(), POLLIN, 0};
    CHECK(::poll(&waiting, 1, 200) == 0);  // no answer while every place is taken
    // One that gives up while it waits (its timeout passed): its request is not carried out.
    {
        RawClient gave_up(socket);
        REQUIRE(gave_up.send(R"({"op":"mount","bootstrap":"/gave-up.boot","mountpoint":"/m"})" "\n"));
    }
    clients.pop_back();
    CHECK(json::parse(*extra.readLine())["ok"] == true);
    clients.pop_back();
    CHECK(RawClient(socket).ask(R"({"op":"list"})")["ok"] == true);
    CHECK(handler.mounts().empty());
}

TEST_CASE("control server closes connections that stay idle, freeing their places", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;
    ControlServer server = ControlServer::bind(socket, handler);
    server.setIdleTimeout(std::chrono::milliseconds(300));
    std::vector<RawClient> stuck;
    for (size_t i = 0; i < ControlServer::kMaxConnections; ++i) stuck.emplace_back(socket);
    REQUIRE(stuck.back().send(R"({"op":"li)"));  // half a request, then nothing
    // Every place is taken now; once the idle ones are closed a new client is served.
    const auto start = std::chrono::steady_clock::now();
    for (int attempt = 0;; ++attempt) {
        RawClient next(socket);
        next.send("{\"op\":\"list\"}\n");
        auto reply = next.readLine();
        if (reply && json::parse(*reply)["ok"] == true) break;
        REQUIRE(attempt < 300);
        ::usleep(10000);
    }
    CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(250));
    CHECK(json::parse(*stuck.front().readLine()) == errorJson("no complete request for 0.3 s; rafsd closes this connection"));
    CHECK(stuck.front().readLine() == std::nullopt);
    CHECK(json::parse(*stuck.back().readLine()) == errorJson("no complete request for 0.3 s; rafsd closes this connection"));
}

TEST_CASE("control server closes a connection whose request trickles in, a byte at a time", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;
    ControlServer server = ControlServer::bind(socket, handler);
    server.setIdleTimeout(std::chrono::milliseconds(300));
    RawClient trickle(socket);
    const std::string request = R"({"op":"list"}                                                      )";
    const auto start = std::chrono::steady_clock::now();
    bool closed = false;
    for (char c : request) {
        if (!trickle.send(std::string(1, c))) {
            closed = true;
            break;
        }
        ::usleep(50'000);  // each byte well within the timeout, the line far beyond it
    }
    CHECK(closed);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
    const auto reply = trickle.readLine();
    REQUIRE(reply);
    CHECK(json::parse(*reply) == errorJson("no complete request for 0.3 s; rafsd closes this connection"));
}

TEST_CASE("control server stop() is prompt with clients connected", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;
    ControlServer server = ControlServer::bind(socket, handler);
    RawClient idle(socket);
    RawClient halfway(socket);
    CHECK(halfway.ask(R"({"op":"list"})")["ok"] == true);
    REQUIRE(halfway.send(R"({"op":"li)"));

    auto start = std::chrono::steady_clock::now();
    server.stop();
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
    CHECK(idle.readLine() == std::nullopt);
    CHECK(halfway.readLine() == std::nullopt);
    CHECK(!std::filesystem::exists(socket));
    CHECK_THROWS_WITH(rafsd::ControlClient(socket, std::chrono::seconds(1)).call(rafsd::ListRequest{}),
                      fmt::format("cannot connect to {}: No such file or directory (is rafsd serve running?)",
                                  socket.string()));
}

TEST_CASE("control server replaces a stale socket, not a live one", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;

    // Left by a rafsd that died: bound, nobody listening.
    boundSocket(socket, false);
    REQUIRE(std::filesystem::exists(socket));
    {
        ControlServer server = ControlServer::bind(socket, handler);
        CHECK(RawClient(socket).ask(R"({"op":"list"})")["ok"] == true);

        // A second server must not take over the first one's socket.
        CHECK_THROWS_WITH(ControlServer::bind(socket, handler),
                          fmt::format("another process is already listening on {}", socket.string()));
        CHECK(RawClient(socket).ask(R"({"op":"list"})")["ok"] == true);
    }
    {
        // Nor another program's.
        rafs::UniqueFd other = boundSocket(socket, true);
        CHECK_THROWS_WITH(ControlServer::bind(socket, handler),
                          fmt::format("another process is already listening on {}", socket.string()));
        CHECK(std::filesystem::exists(socket));
    }
    std::filesystem::remove(socket);

    std::ofstream(socket) << "not a socket";
    CHECK_THROWS_WITH(ControlServer::bind(socket, handler),
                      fmt::format("cannot bind {}: it exists and is not a socket", socket.string()));
    std::filesystem::remove(socket);

    std::ofstream(dir.path / "file") << "x";
    CHECK_THROWS_WITH(ControlServer::bind(dir.path / "file/api.sock", handler),
                      fmt::format("cannot bind {}: opening its directory to lock it: Not a directory", (dir.path / "file/api.sock").string()));
}

TEST_CASE("control server adopts a listening socket", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;
    {
        ControlServer server = ControlServer::adopt(boundSocket(socket, true).release(), handler);
        CHECK(server.adopted());
        CHECK(RawClient(socket).ask(R"({"op":"list"})")["ok"] == true);
    }
    // The socket file is the owner's (systemd's) to remove.
    CHECK(std::filesystem::exists(socket));
    std::filesystem::remove(socket);

    // An activated socket may let anyone connect (a .socket unit's default mode is 0666): only
    // root is served.
    if (::geteuid() == 0) {
        ControlServer server = ControlServer::adopt(boundSocket(socket, true).release(), handler);
        REQUIRE(::chmod(socket.c_str(), 0666) == 0);
        REQUIRE(::chmod(dir.path.c_str(), 0755) == 0);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            // Plain system calls only: this is a copy of a threaded process.
            if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
            const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
            if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) ::_exit(3);
            const timeval timeout{5, 0};  // a served client's connection stays open
            ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
            const char request[] = "{\"op\":\"list\"}\n";
            // Refused at once, the connection may be closed before the request is sent: no SIGPIPE,
            // and the refusal is read all the same.
            (void)::send(fd, request, sizeof request - 1, MSG_NOSIGNAL);
            char reply[512] = {};
            ssize_t got = 0;
            for (ssize_t n; got < static_cast<ssize_t>(sizeof reply - 1) &&
                            (n = ::read(fd, reply + got, sizeof reply - 1 - static_cast<size_t>(got))) > 0;) {
                got += n;
            }
            ::_exit(std::strstr(reply, "root only") != nullptr && std::strstr(reply, "\"ok\":false") != nullptr ? 0 : 5);
        }
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);  // 5: it was answered
        CHECK(RawClient(socket).ask(R"({"op":"list"})")["ok"] == true);  // root still is
    }
    std::filesystem::remove(socket);

    int notListening = boundSocket(socket, false).release();
    CHECK_THROWS_WITH(ControlServer::adopt(notListening, handler),
                      fmt::format("fd {} is not a listening unix stream socket", notListening));
    CHECK(::fcntl(notListening, F_GETFD) == -1);  // owned, so closed
    std::filesystem::remove(socket);

    // Socket activation: LISTEN_FDS fds start at 3; borrow fd 3 for the test.
    rafs::UniqueFd saved(::fcntl(3, F_DUPFD_CLOEXEC, 10));
    rafs::UniqueFd listening = boundSocket(socket, true);
    REQUIRE(::dup2(listening.get(), 3) == 3);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "1", 1);
    {
        ControlServer server = ControlServer::fromSystemdOrPath(dir.path / "unused.sock", handler);
        CHECK(server.adopted());
        CHECK(RawClient(socket).ask(R"({"op":"list"})")["ok"] == true);
        CHECK(!std::filesystem::exists(dir.path / "unused.sock"));
    }
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    if (saved.get() >= 0) REQUIRE(::dup2(saved.get(), 3) == 3);

    // Without activation it binds the path.
    ControlServer server = ControlServer::fromSystemdOrPath(dir.path / "bound.sock", handler);
    CHECK(!server.adopted());
    CHECK(RawClient(dir.path / "bound.sock").ask(R"({"op":"list"})")["ok"] == true);
}

TEST_CASE("control client", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    FakeHandler handler;
    json images = json::array({{{"mountpoint", "/m"}}});
    handler.setStatus({{"images", images}});
    ControlServer server = ControlServer::bind(socket, handler);
    rafsd::ControlClient client(socket, std::chrono::seconds(5));
    CHECK(client.call(rafsd::StatusRequest{}) == json{{"ok", true}, {"images", images}});
    CHECK_THROWS_WITH(client.call(MountRequest{"/a.boot", "/fail", {}, {}, {}, {}, false, {}}), "mount failed: boom second line");

    CHECK_THROWS_WITH(rafsd::ControlClient(dir.path / "none.sock", std::chrono::seconds(1)).call(rafsd::ListRequest{}),
                      fmt::format("cannot connect to {}: No such file or directory (is rafsd serve running?)",
                                  (dir.path / "none.sock").string()));
    rafs::UniqueFd stale = boundSocket(dir.path / "stale.sock", false);
    CHECK_THROWS_WITH(rafsd::ControlClient(dir.path / "stale.sock", std::chrono::seconds(1)).call(rafsd::ListRequest{}),
                      fmt::format("cannot connect to {}: Connection refused (is rafsd serve running?)",
                                  (dir.path / "stale.sock").string()));

    // Between two workers: the socket refuses connections (or is absent), then listens again.
    {
        const std::filesystem::path next = dir.path / "next.sock";
        rafs::UniqueFd listener = boundSocket(next, false);
        bool served = false;  // checked once the thread is joined (Catch's macros are not thread-safe)
        std::thread worker([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            if (::listen(listener.get(), 4) != 0) return;
            rafs::UniqueFd peer(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
            char request[4096];
            const std::string answer = "{\"ok\": true}\n";
            served = peer.get() >= 0 && ::recv(peer.get(), request, sizeof request, 0) > 0 &&
                     ::send(peer.get(), answer.data(), answer.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(answer.size());
        });
        using Wait = rafsd::ControlClient::WaitForWorker;
        CHECK(rafsd::ControlClient(next, std::chrono::seconds(5), Wait::WhileRefused).call(rafsd::ListRequest{}) ==
              json{{"ok", true}});
        worker.join();
        CHECK(served);
        // Within the caller's timeout, and not while absent unless asked to.
        {
            const auto begin = std::chrono::steady_clock::now();
            CHECK_THROWS_WITH(
                rafsd::ControlClient(dir.path / "stale.sock", std::chrono::milliseconds(500), Wait::WhileRefused)
                    .call(rafsd::ListRequest{}),
                Catch::Contains("Connection refused"));
            const auto waited = std::chrono::steady_clock::now() - begin;
            CHECK(waited >= std::chrono::milliseconds(400));
            CHECK(waited < std::chrono::seconds(3));
        }
        const auto begin = std::chrono::steady_clock::now();
        CHECK_THROWS_WITH(rafsd::ControlClient(dir.path / "none.sock", std::chrono::seconds(5), Wait::WhileRefused)
                              .call(rafsd::ListRequest{}),
                          Catch::Contains("No such file or directory"));
        CHECK(std::chrono::steady_clock::now() - begin < std::chrono::seconds(1));
        CHECK_THROWS_WITH(rafsd::ControlClient(dir.path / "none.sock", std::chrono::milliseconds(400),
                                               Wait::WhileRefusedOrAbsent)
                              .call(rafsd::ListRequest{}),
                          Catch::Contains("No such file or directory"));
        CHECK(std::chrono::steady_clock::now() - begin >= std::chrono::milliseconds(300));
    }

    // A peer that accepts nothing and answers nothing.
    rafs::UniqueFd mute = boundSocket(dir.path / "mute.sock", true);
    auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_WITH(rafsd::ControlClient(dir.path / "mute.sock", std::chrono::milliseconds(200)).call(rafsd::ListRequest{}),
                      fmt::format("no response from rafsd on {} within 0.2s", (dir.path / "mute.sock").string()));
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));

    // A peer that turns the client away and closes before taking the request (rafsd refusing a
    // user that is not root): the client says why, not "Broken pipe". The request is larger than
    // the socket's buffer, so its send fails whatever the order.
    rafs::UniqueFd refusing = boundSocket(dir.path / "refusing.sock", true);
    ssize_t refusal_sent = 0;  // checked after the join: Catch2's assertions are not thread-safe
    const std::string refusal = R"({"ok":false,"error":"rafsd takes requests from root only, not from uid 1000"})" "\n";
    std::thread turn_away([&] {
        rafs::UniqueFd peer(::accept(refusing.get(), nullptr, nullptr));
        refusal_sent = ::send(peer.get(), refusal.data(), refusal.size(), MSG_NOSIGNAL);
    });
    CHECK_THROWS_WITH(rafsd::ControlClient(dir.path / "refusing.sock", std::chrono::seconds(5))
                          .call(rafsd::StatusRequest{std::filesystem::path("/" + std::string(4 << 20, 'm'))}),
                      "rafsd takes requests from root only, not from uid 1000");
    turn_away.join();
    CHECK(refusal_sent == static_cast<ssize_t>(refusal.size()));
}

TEST_CASE("rafsctl against a fake rafsd", "[api]") {
    TempDir dir;
    std::filesystem::path socket = dir.path / "api.sock";
    std::filesystem::create_directories(dir.path / "work/mnt");
    FakeHandler handler;
    ControlServer server = ControlServer::bind(socket, handler);
    std::string s = "--socket '" + socket.string() + "' ";
    std::filesystem::path cwd = dir.path / "work";
    std::ofstream(cwd / "image.boot").put('x');  // a path that exists is a bootstrap

    Run run = rafsctl(s + "mount --engine fscache --fsid img1 --domain-id d --blob-dir blobs image.boot mnt/", cwd);
    CHECK(run.status == 0);
    CHECK(run.output == fmt::format("mounted {0}/work/image.boot on {0}/work/mnt (fanotify)\n", dir.path.string()));
    REQUIRE(handler.mounts().size() == 1);
    CHECK(handler.mounts()[0] == MountRequest{cwd / "image.boot", cwd / "mnt", cwd / "blobs", rafsd::EngineKind::Fscache,
                                            "d", "img1", false, {}});

    // Anything else is an image reference, for rafsd to check.
    run = rafsctl(s + "mount 127.0.0.1:5000/app:v1 mnt", cwd);
    CHECK(run.status == 0);
    CHECK(run.output == fmt::format("mounted 127.0.0.1:5000/app:v1 on {}/work/mnt (fanotify)\n", dir.path.string()));
    REQUIRE(handler.mounts().size() == 2);
    CHECK(handler.mounts()[1].image == "127.0.0.1:5000/app:v1");
    CHECK(handler.mounts()[1].bootstrap.empty());

    run = rafsctl(s + "mount image.boot /fail", cwd);
    CHECK(run.status == 1);
    CHECK(run.output == "rafsctl: mount failed: boom second line\n");
    run = rafsctl(s + "mount --engine fuse image.boot mnt", cwd);
    CHECK(run.status == 1);
    CHECK(run.output == "rafsctl: --engine 'fuse' is not one of auto, fanotify, fscache\n");
    run = rafsctl(s + "mount image.boot", cwd);
    CHECK(run.status == 2);  // a usage error, as for rafsd and mkrafs
    CHECK(run.output == "rafsctl: MOUNTPOINT is required (see rafsctl --help)\n");
    run = rafsctl(s + "mout image.boot mnt", cwd);
    CHECK(run.status == 2);
    CHECK(run.output == "rafsctl: unknown command 'mout' (see rafsctl --help)\n");

    run = rafsctl(s + "umount mnt", cwd);
    CHECK(run.status == 0);
    CHECK(run.output.empty());
    CHECK(handler.umounts() == std::vector<std::filesystem::path>{cwd / "mnt"});

    handler.setList(json::parse(R"({"images":[
        {"mountpoint":"/mnt/a","bootstrap":"/images/alpine.boot","engine":"fanotify","blobs":2},
        {"mountpoint":"/mnt/longer-name","bootstrap":"/i/b.boot","engine":"fscache","blobs":[{},{},{}]},
        {"mountpoint":"/mnt/c","bootstrap":"/s/c.boot","image":"h:1/app:v1","engine":"fanotify","blobs":1}]})"));
    run = rafsctl(s + "list", cwd);
    CHECK(run.status == 0);
    CHECK(run.output ==
          "MOUNTPOINT        IMAGE                ENGINE    BLOBS\n"
          "/mnt/a            /images/alpine.boot  fanotify      2\n"
          "/mnt/longer-name  /i/b.boot            fscache       3\n"
          "/mnt/c            h:1/app:v1           fanotify      1\n");

    json status = json::parse(R"({"images":[
        {"mountpoint":"/mnt/a","bootstrap":"/images/alpine.boot","engine":"fanotify","uptime":12,"blobs":[
          {"id":"be7d77e3a1c2d4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9","size":12582912,"chunks":96,
           "chunks_present":40,"misses":12,"bytes_fetched":3250585,"bytes_from_cache":1258291,"prefetch_done":57.4,
           "errors":0,"retries":1},
          {"id":"2fa78","size":512,"chunks":1,"chunks_present":1,"misses":0,"bytes_fetched":512,
           "bytes_from_cache":0,"errors":2}]},
        {"mountpoint":"/mnt/b","bootstrap":"/b.boot","engine":"fscache","blobs":[]}]})");
    handler.setStatus(status);
    run = rafsctl(s + "status", cwd);
    CHECK(run.status == 0);
    CHECK(run.output ==
          "/mnt/a  (image /images/alpine.boot, engine fanotify, uptime 12)\n"
          "  BLOB             SIZE  CHUNKS  MISSES  FETCHED  FROM CACHE  PREFETCH  ERRORS  RETRIES\n"
          "  be7d77e3a1c2  12.0MiB   40/96      12   3.1MiB      1.2MiB       57%       0        1\n"
          "  2fa78            512B     1/1       0     512B          0B         -       2        -\n"
          "\n"
          "/mnt/b  (image /b.boot, engine fscache)\n"
          "  no blobs\n");
    run = rafsctl(s + "status --json", cwd);
    CHECK(run.status == 0);
    CHECK(json::parse(run.output) == json{{"ok", true}, {"images", status["images"]}});
    run = rafsctl(s + "status /nowhere", cwd);
    CHECK(run.status == 1);
    CHECK(run.output == "rafsctl: /nowhere is not mounted\n");

    server.stop();
    run = rafsctl(s + "list", cwd);
    CHECK(run.status == 1);
    CHECK(run.output ==
          fmt::format("rafsctl: cannot connect to {}: No such file or directory (is rafsd serve running?)\n", socket.string()));
}

TEST_CASE("control: a mount by image reference", "[api]") {
    const auto r = std::get<MountRequest>(parseRequest(R"({"op":"mount","image":"h:5/app:v1","mountpoint":"/m"})"));
    CHECK(r.image == "h:5/app:v1");
    CHECK(r.bootstrap.empty());
    CHECK(parseRequest(rafsd::formatRequest(r)) == Request(r));
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","image":"h/a","bootstrap":"/a","mountpoint":"/m"})"),
                      "mount request has both 'bootstrap' and 'image'");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","mountpoint":"/m"})"), "mount request has no 'bootstrap'");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","image":5,"mountpoint":"/m"})"), "image: 5 is not a string");
    CHECK_THROWS_WITH(parseRequest(R"({"op":"mount","image":"","mountpoint":"/m"})"),
                      "image: \"\" is not an image reference");
}
