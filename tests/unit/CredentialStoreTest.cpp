#include "registry/CredentialStore.h"

#include "TempDir.h"
#include "format/Error.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

using registry::CredentialStore;
using registry::Credentials;

namespace {

void write(const std::string& path, const std::string& text) {
    std::ofstream(path + ".tmp") << text;
    std::filesystem::rename(path + ".tmp", path);
}

}  // namespace

TEST_CASE("credentials from auths, re-read when the file changes", "[credentials]") {
    rafs::test::TempDir dir;
    const std::string path = dir / "config.json";
    CredentialStore store(path);
    CHECK_FALSE(store.lookup("reg:5000"));  // no file: anonymous
    write(path, R"({"auths": {"reg:5000": {"auth": "dXNlcjpwYTpzcw=="},
                              "https://other.example/v1/": {"username": "u2", "password": "p2"}}})");
    CHECK(store.lookup("reg:5000") == Credentials{"user", "pa:ss"});
    CHECK(store.lookup("other.example") == Credentials{"u2", "p2"});
    CHECK_FALSE(store.lookup("unknown:1"));
    write(path, R"({"auths": {"reg:5000": {"auth": "bmV3OnNlY3JldA=="}}})");
    CHECK(store.lookup("reg:5000") == Credentials{"new", "secret"});
}

TEST_CASE("a bad config.json is named, its content is not", "[credentials]") {
    rafs::test::TempDir dir;
    const std::string path = dir / "config.json";
    write(path, R"({"auths": {"reg": {"auth": "c2VjcmV0LXdpdGhvdXQtY29sb24="}}})");
    CredentialStore store(path);
    CHECK_THROWS_WITH(store.lookup("reg"), path + ": auths.\"reg\".auth is not base64 of user:password");
    write(path, "secret-not-json");
    CHECK_THROWS_WITH(store.lookup("reg"), path + ": not a JSON object");
    // A file that is not there has no credentials, and a message about them says it is missing.
    CHECK(store.describe() == path);
    CredentialStore missing(dir / "typo.json");
    CHECK_FALSE(missing.lookup("reg").has_value());
    CHECK(missing.describe() == dir / "typo.json" + " (no such file)");
}

TEST_CASE("credential helpers: credHelpers first, then credsStore, then auths", "[credentials]") {
    rafs::test::TempDir dir;
    // A helper that answers for "reg:5000" and knows nothing else, as docker-credential-helpers do.
    const std::string helper = dir / "docker-credential-rafstest";
    std::ofstream(helper) << "#!/bin/sh\n"
                             "[ \"$1\" = get ] || exit 2\n"
                             "read host\n"
                             "if [ \"$host\" = reg:5000 ]; then\n"
                             "  echo '{\"ServerURL\":\"reg:5000\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\n"
                             "else echo 'credentials not found in native keychain'; exit 1; fi\n";
    ::chmod(helper.c_str(), 0755);
    const std::string broken = dir / "docker-credential-broken";
    std::ofstream(broken) << "#!/bin/sh\necho 'helper exploded'\nexit 3\n";
    ::chmod(broken.c_str(), 0755);
    const std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
    ::setenv("PATH", (dir.path().string() + ":" + old_path).c_str(), 1);

    const std::string path = dir / "config.json";
    write(path, R"({"credsStore": "rafstest", "credHelpers": {"b:1": "broken", "m:1": "missing"},
                    "auths": {"other:1": {"auth": "YTpi"}}})");
    CredentialStore store(path);
    CHECK(store.lookup("reg:5000") == Credentials{"hu", "hs"});
    CHECK(store.lookup("other:1") == Credentials{"a", "b"});  // the store has none: auths
    CHECK_FALSE(store.lookup("nothing:1"));
    CHECK_THROWS_WITH(store.lookup("b:1"), "docker-credential-broken get failed (helper exploded)");
    CHECK_THROWS_WITH(store.lookup("m:1"), Catch::Contains("docker-credential-missing"));
    ::setenv("PATH", old_path.c_str(), 1);
}

TEST_CASE("a credential helper inherits no fd of the daemon but its pipes", "[credentials]") {
    rafs::test::TempDir dir;
    // An fd without O_CLOEXEC, as cachefiles' anonymous fds and fanotify's event fds are.
    const int kept = ::open("/dev/null", O_RDONLY);
    REQUIRE(kept > 2);
    const std::string helper = dir / "docker-credential-fds";
    std::ofstream(helper) << "#!/bin/sh\nread host\n"
                          << "if [ -e /proc/$$/fd/" << kept << " ]; then u=inherited; else u=none; fi\n"
                          << "echo \"{\\\"Username\\\":\\\"$u\\\",\\\"Secret\\\":\\\"s\\\"}\"\n";
    ::chmod(helper.c_str(), 0755);
    const std::string path = dir / "config.json";
    write(path, R"({"credsStore": "fds"})");
    const std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
    ::setenv("PATH", (dir.path().string() + ":" + old_path).c_str(), 1);
    const auto found = CredentialStore(path).lookup("reg:5000");
    ::setenv("PATH", old_path.c_str(), 1);
    ::close(kept);
    CHECK(found == Credentials{"none", "s"});
}
