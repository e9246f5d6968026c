// Chunk digests: blake3 (Nydus's default) and sha256, over the uncompressed chunk.
#pragma once

#include "kernel-abi/rafs.h"

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>
#include <string>
#include <string_view>

namespace rafs {

using Digest = std::array<uint8_t, kDigestSize>;

std::string toHex(std::span<const uint8_t> bytes);
// Parses exactly 64 lowercase or uppercase hex characters; throws Error otherwise.
Digest digestFromHex(std::string_view hex);

std::string_view digesterName(Digester d);
// "blake3" or "sha256"; throws Error naming the bad value.
Digester parseDigester(std::string_view name);

// Incremental hashing with either algorithm.
class Hasher {
public:
    explicit Hasher(Digester algo);
    ~Hasher();
    Hasher(Hasher&&) noexcept;
    Hasher& operator=(Hasher&&) noexcept;

    void update(std::span<const uint8_t> data);
    // Returns the digest and resets the hasher, so one Hasher can digest one input after another.
    Digest finish();
    // The digest of the input so far, leaving the state as it is for more input: one pass gives
    // the digests of a prefix and of the whole.
    Digest current() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

Digest digestOf(Digester algo, std::span<const uint8_t> data);

// A table of digests stored back to back (a blob's blob.digest section); `raw` must hold a whole
// number of them.
std::vector<Digest> splitDigests(std::span<const uint8_t> raw);

}  // namespace rafs
