#include "format/Blake3.h"
#include "format/Digest.h"
#include "format/Error.h"

#include <catch2/catch.hpp>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using rafs::Blake3;
using Catch::Matchers::Contains;

namespace {

// Computed with Debian's b3sum 1.2.0 over the official test vectors' input: byte i is i % 251.
struct Vector {
    size_t len;
    std::string_view hex;
};
constexpr Vector kVectors[] = {
    {0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
    {1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
    {63, "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b"},
    {64, "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98"},
    {65, "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee"},
    {1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
    {1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
    {1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
    {2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
    {2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
    {3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
    {3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
    {4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
    {4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"},
    {5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
    {5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"},
    {6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"},
    {6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"},
    {7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
    {7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"},
    {8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
    {8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
    {16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
    {31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
    {102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
    {1 << 20, "74cb441fd087764ca9c3694da742ebe30cbeb3060a17009ca81825c7a8d10343"},
    {(16 << 20) + 1, "3a734b24df8a7d6c13f0a980f06b74c9ffe3ea327dd5a23a3a108533c18684ff"},
};

std::vector<uint8_t> pattern(size_t len) {
    std::vector<uint8_t> data(len);
    for (size_t i = 0; i < len; ++i) data[i] = static_cast<uint8_t>(i % 251);
    return data;
}

std::vector<uint8_t> randomBytes(size_t len, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<uint8_t> data(len);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    return data;
}

std::vector<Blake3::Backend> supportedBackends() {
    std::vector<Blake3::Backend> out;
    for (auto b : {Blake3::Backend::Portable, Blake3::Backend::Sse41, Blake3::Backend::Avx2, Blake3::Backend::Avx512}) {
        if (Blake3::supported(b)) out.push_back(b);
    }
    return out;
}

std::string blake3Hex(Blake3::Backend backend, std::span<const uint8_t> data) {
    Blake3 h(backend);
    h.update(data);
    return rafs::toHex(h.finish());
}

// Feeds `data` in pieces whose sizes cycle through `splits`.
std::string blake3SplitHex(Blake3::Backend backend, std::span<const uint8_t> data,
                           std::span<const size_t> splits) {
    Blake3 h(backend);
    for (size_t i = 0; !data.empty(); ++i) {
        size_t n = std::min(splits[i % splits.size()], data.size());
        h.update(data.first(n));
        data = data.subspan(n);
    }
    return rafs::toHex(h.finish());
}

std::span<const uint8_t> bytesOf(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string sha256Hex(std::string_view s) {
    return rafs::toHex(rafs::digestOf(rafs::Digester::Sha256, bytesOf(s)));
}

}  // namespace

TEST_CASE("BLAKE3 matches b3sum on the test-vector input, one-shot and split", "[digest][blake3]") {
    const auto input = pattern(kVectors[std::size(kVectors) - 1].len);
    // Split sizes that land updates inside blocks, on block and chunk edges, and across many
    // chunks at counters that are not aligned to a subtree.
    const std::vector<size_t> small = {1, 3, 63, 65, 127, 1000};
    const std::vector<size_t> mixed = {1, 64, 1025, 7, 4097, 65537, 2047, 300000};
    for (auto backend : supportedBackends()) {
        for (const auto& v : kVectors) {
            CAPTURE(Blake3::backendName(backend), v.len);
            auto data = std::span(input).first(v.len);
            CHECK(blake3Hex(backend, data) == v.hex);
            CHECK(blake3SplitHex(backend, data, small) == v.hex);
            CHECK(blake3SplitHex(backend, data, mixed) == v.hex);
        }
    }
}

TEST_CASE("BLAKE3 backends are detected and named", "[digest][blake3]") {
    auto backends = supportedBackends();
    REQUIRE(backends.front() == Blake3::Backend::Portable);
    CHECK(backends.back() == Blake3::bestBackend());
    CHECK(Blake3().backend() == Blake3::bestBackend());
    CHECK(Blake3::backendName(Blake3::Backend::Portable) == "portable");
    CHECK(Blake3::backendName(Blake3::Backend::Sse41) == "sse4.1");
    CHECK(Blake3::backendName(Blake3::Backend::Avx2) == "avx2");
    CHECK(Blake3::backendName(Blake3::Backend::Avx512) == "avx512");
    for (auto b : backends) WARN("BLAKE3 backend available: " << Blake3::backendName(b));
}

TEST_CASE("BLAKE3 backends agree on random data fed in random pieces", "[digest][blake3]") {
    std::mt19937 rng(20240601);
    const auto input = randomBytes(600 * 1024, 7);
    for (int round = 0; round < 60; ++round) {
        // Mostly short inputs, where chunk and block edges are dense, and some long ones.
        size_t len = round % 4 == 0 ? rng() % input.size() : rng() % 9000;
        auto data = std::span(input).first(len);
        std::vector<size_t> splits;
        for (int i = 0; i < 5; ++i) splits.push_back(1 + rng() % (round % 2 == 0 ? 200 : 70000));
        CAPTURE(round, len, splits);
        const auto expected = blake3Hex(Blake3::Backend::Portable, data);
        for (auto backend : supportedBackends()) {
            CAPTURE(Blake3::backendName(backend));
            CHECK(blake3Hex(backend, data) == expected);
            CHECK(blake3SplitHex(backend, data, splits) == expected);
        }
    }
}

TEST_CASE("BLAKE3 finish leaves the state open for more input", "[digest][blake3]") {
    const auto input = pattern(300000);
    for (auto backend : supportedBackends()) {
        CAPTURE(Blake3::backendName(backend));
        Blake3 h(backend);
        h.update(std::span(input).first(5000));
        CHECK(rafs::toHex(h.finish()) == blake3Hex(backend, std::span(input).first(5000)));
        h.update(std::span(input).subspan(5000));
        CHECK(rafs::toHex(h.finish()) == blake3Hex(Blake3::Backend::Portable, input));
    }
}

TEST_CASE("Hasher::current gives a prefix's digest and keeps the state", "[digest]") {
    const auto input = pattern(300000);
    for (const rafs::Digester algo : {rafs::Digester::Sha256, rafs::Digester::Blake3}) {
        CAPTURE(rafs::digesterName(algo));
        rafs::Hasher h(algo);
        h.update(std::span(input).first(5000));
        CHECK(h.current() == rafs::digestOf(algo, std::span(input).first(5000)));
        CHECK(h.current() == rafs::digestOf(algo, std::span(input).first(5000)));
        h.update(std::span(input).subspan(5000));
        CHECK(h.finish() == rafs::digestOf(algo, input));
    }
}

TEST_CASE("sha256 known answers", "[digest][sha256]") {
    CHECK(sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    // A million 'a's, fed in uneven pieces.
    const std::string million(1000000, 'a');
    rafs::Hasher h(rafs::Digester::Sha256);
    auto rest = bytesOf(million);
    for (size_t n = 1; !rest.empty(); n = n * 3 + 1) {
        size_t take = std::min(n, rest.size());
        h.update(rest.first(take));
        rest = rest.subspan(take);
    }
    CHECK(rafs::toHex(h.finish()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("Hasher wraps both algorithms and starts over after finish", "[digest]") {
    const auto input = pattern(102400);
    const std::string_view blake3Expected = kVectors[24].hex;
    REQUIRE(kVectors[24].len == input.size());

    rafs::Hasher b3(rafs::Digester::Blake3);
    b3.update(std::span(input).first(100));
    b3.update(std::span(input).subspan(100));
    CHECK(rafs::toHex(b3.finish()) == blake3Expected);
    CHECK(rafs::toHex(b3.finish()) == kVectors[0].hex);
    CHECK(rafs::toHex(rafs::digestOf(rafs::Digester::Blake3, input)) == blake3Expected);

    rafs::Hasher sha(rafs::Digester::Sha256);
    sha.update(bytesOf("abc"));
    CHECK(rafs::toHex(sha.finish()) == sha256Hex("abc"));
    CHECK(rafs::toHex(sha.finish()) == sha256Hex(""));

    rafs::Hasher moved(std::move(sha));
    moved.update(bytesOf("abc"));
    rafs::Hasher assigned(rafs::Digester::Blake3);
    assigned = std::move(moved);
    CHECK(rafs::toHex(assigned.finish()) == sha256Hex("abc"));

    CHECK_THROWS_AS(rafs::Hasher(static_cast<rafs::Digester>(7)), rafs::Error);
}

TEST_CASE("hex round trip", "[digest]") {
    rafs::Digest d;
    for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(i * 8 + 7);
    const std::string hex = rafs::toHex(d);
    CHECK(hex == "070f171f272f373f474f575f676f777f878f979fa7afb7bfc7cfd7dfe7eff7ff");
    CHECK(rafs::digestFromHex(hex) == d);
    std::string upper = hex;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    CHECK(rafs::digestFromHex(upper) == d);
    CHECK(rafs::toHex({}).empty());
    const std::array<uint8_t, 3> few = {0x00, 0xab, 0xff};
    CHECK(rafs::toHex(few) == "00abff");
}

TEST_CASE("digestFromHex rejects bad lengths and characters", "[digest]") {
    const std::string good(64, 'a');
    for (size_t len : {0u, 1u, 63u, 65u, 128u}) {
        CAPTURE(len);
        CHECK_THROWS_WITH(rafs::digestFromHex(std::string(len, 'a')),
                          Contains("expected 64 hex characters, got " + std::to_string(len)));
    }
    for (char c : {'g', 'G', ' ', '-', 'x', '\0', '/', ':', '@', '`'}) {
        for (size_t pos : {0u, 1u, 30u, 63u}) {
            CAPTURE(static_cast<int>(c), pos);
            std::string bad = good;
            bad[pos] = c;
            CHECK_THROWS_WITH(rafs::digestFromHex(bad),
                              Contains("character " + std::to_string(pos) + " is not a hex digit"));
        }
    }
    CHECK_THROWS_AS(rafs::digestFromHex("0x" + std::string(62, '0')), rafs::Error);
}

TEST_CASE("digester names parse and print", "[digest]") {
    CHECK(rafs::parseDigester("blake3") == rafs::Digester::Blake3);
    CHECK(rafs::parseDigester("sha256") == rafs::Digester::Sha256);
    CHECK(rafs::digesterName(rafs::Digester::Blake3) == "blake3");
    CHECK(rafs::digesterName(rafs::Digester::Sha256) == "sha256");
    for (std::string_view bad : {"md5", "", "BLAKE3", "sha-256", "blake3 "}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(rafs::parseDigester(bad), rafs::Error);
    }
    CHECK_THROWS_WITH(rafs::parseDigester("md5"),
                      Contains("'md5'") && Contains("blake3") && Contains("sha256"));
}

namespace {

std::string findOnPath(std::string_view name) {
    const char* path = std::getenv("PATH");
    std::string_view dirs = path ? path : "";
    while (!dirs.empty()) {
        size_t colon = dirs.find(':');
        std::string candidate = std::string(dirs.substr(0, colon)) + "/" + std::string(name);
        if (access(candidate.c_str(), X_OK) == 0) return candidate;
        dirs = colon == std::string_view::npos ? "" : dirs.substr(colon + 1);
    }
    return {};
}

}  // namespace

TEST_CASE("BLAKE3 matches the b3sum tool on random data", "[digest][b3sum]") {
    const std::string b3sum = findOnPath("b3sum");
    if (b3sum.empty()) {
        WARN("b3sum is not on PATH; skipping the comparison with it");
        return;
    }
    const auto data = randomBytes(5'000'000, static_cast<uint32_t>(std::random_device{}()));
    std::string file = (std::filesystem::temp_directory_path() / "rafs-digest-XXXXXX").string();
    int fd = mkstemp(file.data());
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    close(fd);

    std::string command = b3sum + " --no-names '" + file + "'";
    FILE* pipe = popen(command.c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::array<char, 128> line{};
    const bool got = std::fgets(line.data(), static_cast<int>(line.size()), pipe) != nullptr;
    const int status = pclose(pipe);
    std::filesystem::remove(file);
    REQUIRE(got);
    REQUIRE(status == 0);
    const std::string expected = std::string(line.data()).substr(0, 64);

    for (auto backend : supportedBackends()) {
        CAPTURE(Blake3::backendName(backend));
        CHECK(blake3Hex(backend, data) == expected);
    }
    CHECK(rafs::toHex(rafs::digestOf(rafs::Digester::Blake3, data)) == expected);
}

TEST_CASE("digest throughput", "[.benchmark]") {
    const auto data = randomBytes(64 << 20, 1);
    // The best of several runs in this thread's CPU time, since the machine is shared with builds.
    auto mbPerSecond = [&](auto&& hashAll) {
        double best = 0;
        for (int run = 0; run < 7; ++run) {
            timespec start{};
            timespec end{};
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
            hashAll();
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
            double seconds = static_cast<double>(end.tv_sec - start.tv_sec) +
                             static_cast<double>(end.tv_nsec - start.tv_nsec) / 1e9;
            best = std::max(best, static_cast<double>(data.size()) / seconds / 1e6);
        }
        return best;
    };
    for (auto backend : supportedBackends()) {
        double oneShot = mbPerSecond([&] { blake3Hex(backend, data); });
        // The builder's case: one hasher per 1 MiB chunk.
        double perChunk = mbPerSecond([&] {
            for (size_t off = 0; off < data.size(); off += 1 << 20) {
                blake3Hex(backend, std::span(data).subspan(off, 1 << 20));
            }
        });
        WARN("blake3 " << Blake3::backendName(backend) << ": " << oneShot << " MB/s one-shot, "
                       << perChunk << " MB/s in 1 MiB chunks");
    }
    double sha = mbPerSecond([&] { rafs::digestOf(rafs::Digester::Sha256, data); });
    WARN("sha256 (OpenSSL): " << sha << " MB/s");
}
