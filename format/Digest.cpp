#include "format/Digest.h"

#include "format/Blake3.h"
#include "format/Error.h"

#include <openssl/evp.h>

#include <type_traits>
#include <variant>

namespace rafs {

namespace {

struct EvpMdCtxFree {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new()) {
        if (!ctx_) fail("sha256: cannot allocate a digest context");
        init();
    }

    void update(std::span<const uint8_t> data) {
        if (EVP_DigestUpdate(ctx_.get(), data.data(), data.size()) != 1) fail("sha256: update failed");
    }

    // Starts over afterwards, since OpenSSL cannot take more input into a finalized context.
    Digest finish() {
        Digest d;
        unsigned len = 0;
        if (EVP_DigestFinal_ex(ctx_.get(), d.data(), &len) != 1 || len != d.size()) {
            fail("sha256: finalization failed");
        }
        init();
        return d;
    }

    Digest current() const {
        std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree> copy(EVP_MD_CTX_new());
        if (!copy || EVP_MD_CTX_copy_ex(copy.get(), ctx_.get()) != 1) fail("sha256: cannot copy a digest context");
        Digest d;
        unsigned len = 0;
        if (EVP_DigestFinal_ex(copy.get(), d.data(), &len) != 1 || len != d.size()) fail("sha256: finalization failed");
        return d;
    }

private:
    void init() {
        if (EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) fail("sha256: init failed");
    }

    std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree> ctx_;
};

int hexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

std::string toHex(std::span<const uint8_t> bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s;
    s.reserve(bytes.size() * 2);
    for (uint8_t b : bytes) {
        s.push_back(kDigits[b >> 4]);
        s.push_back(kDigits[b & 0xf]);
    }
    return s;
}

// The value is quoted with escapes since it may come from untrusted metadata.
Digest digestFromHex(std::string_view hex) {
    Digest d;
    if (hex.size() != d.size() * 2) {
        fail("bad digest {:?}: expected {} hex characters, got {}", hex, d.size() * 2, hex.size());
    }
    for (size_t i = 0; i < d.size(); ++i) {
        int hi = hexValue(hex[2 * i]);
        int lo = hexValue(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            size_t bad = hi < 0 ? 2 * i : 2 * i + 1;
            fail("bad digest {:?}: character {} is not a hex digit", hex, bad);
        }
        d[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return d;
}

std::string_view digesterName(Digester d) {
    switch (d) {
    case Digester::Blake3: return "blake3";
    case Digester::Sha256: return "sha256";
    }
    return "unknown";
}

Digester parseDigester(std::string_view name) {
    for (auto d : {Digester::Blake3, Digester::Sha256}) {
        if (name == digesterName(d)) return d;
    }
    fail("unknown digest algorithm '{}' (expected blake3 or sha256)", name);
}

struct Hasher::State {
    std::variant<Blake3, Sha256> impl;
};

namespace {

std::variant<Blake3, Sha256> makeImpl(Digester algo) {
    switch (algo) {
    case Digester::Blake3: return Blake3();
    case Digester::Sha256: return Sha256();
    }
    fail("unknown digest algorithm {}", static_cast<uint32_t>(algo));
}

}  // namespace

Hasher::Hasher(Digester algo) : state_(std::make_unique<State>(State{makeImpl(algo)})) {}
Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

void Hasher::update(std::span<const uint8_t> data) {
    std::visit([data](auto& h) { h.update(data); }, state_->impl);
}

// Both algorithms start over afterwards, so one Hasher can digest chunk after chunk.
Digest Hasher::finish() {
    return std::visit(
        [](auto& h) -> Digest {
            Digest d = h.finish();
            if constexpr (std::is_same_v<std::decay_t<decltype(h)>, Blake3>) h = Blake3(h.backend());
            return d;
        },
        state_->impl);
}

Digest Hasher::current() const {
    return std::visit(
        [](const auto& h) -> Digest {
            if constexpr (std::is_same_v<std::decay_t<decltype(h)>, Blake3>) return h.finish();  // const: state kept
            else return h.current();
        },
        state_->impl);
}

std::vector<Digest> splitDigests(std::span<const uint8_t> raw) {
    std::vector<Digest> digests(raw.size() / kDigestSize);
    for (size_t i = 0; i < digests.size(); ++i) {
        std::memcpy(digests[i].data(), raw.data() + i * kDigestSize, kDigestSize);
    }
    return digests;
}

Digest digestOf(Digester algo, std::span<const uint8_t> data) {
    if (algo == Digester::Blake3) {
        Blake3 h;
        h.update(data);
        return h.finish();
    }
    Hasher h(algo);
    h.update(data);
    return h.finish();
}

}  // namespace rafs
