#include "registry/TlsConfig.h"

#include "TempDir.h"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

using namespace registry;
using Catch::Matchers::Contains;

// A host table may hold only mirrors or plain_http: such a host still takes its CAs from
// certs_dir, as config.example.toml says. A certs_dir file that is no certificate shows that it
// was read: the lookup names it.
TEST_CASE("tls: a host configured without TLS files takes them from certs_dir", "[registry]") {
    rafs::test::TempDir certs;
    std::filesystem::create_directory(certs.path() / "reg.test:5000");
    std::ofstream(certs / "reg.test:5000/ca.crt") << "not a certificate\n";
    const TlsConfig without_files({{"reg.test:5000", HostTlsFiles{}}}, certs.path());
    CHECK_THROWS_WITH(without_files.forHost("reg.test:5000"), Contains("ca.crt: no PEM certificate in it"));
    const TlsConfig unconfigured({}, certs.path());
    CHECK_THROWS_WITH(unconfigured.forHost("reg.test:5000"), Contains("ca.crt: no PEM certificate in it"));
    // Configured files win: certs_dir is not read for that host.
    std::ofstream(certs / "client.cert") << "x";
    std::ofstream(certs / "client.key") << "x";
    const TlsConfig configured({{"reg.test:5000", HostTlsFiles{{}, certs / "client.cert", certs / "client.key"}}},
                               certs.path());
    CHECK(configured.forHost("reg.test:5000")->client_cert == certs / "client.cert");
}
