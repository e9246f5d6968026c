// Where a tar layer's raw (possibly compressed) bytes come from: a file, stdin, or a layer blob
// of an image being converted (RemoteLayerSource).
#pragma once

#include "format/UniqueFd.h"

#include <cstdint>
#include <span>
#include <string>

namespace rafs::build {

class ByteSource {
public:
    virtual ~ByteSource() = default;
    // Up to out.size() bytes; 0 at the end. Throws Error naming the source.
    virtual size_t read(std::span<uint8_t> out) = 0;
    // For messages: the path, "stdin", or the image and layer.
    virtual const std::string& name() const = 0;
};

// A file, or stdin for "-".
class FileSource : public ByteSource {
public:
    explicit FileSource(const std::string& input);

    size_t read(std::span<uint8_t> out) override;
    const std::string& name() const override { return name_; }

private:
    std::string name_;
    UniqueFd owned_;  // not stdin
    int fd_ = -1;
};

}  // namespace rafs::build
