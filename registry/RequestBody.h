// What a PUT, POST or PATCH sends: bytes in memory or a file, read from the start on every
// attempt (rewind), so a retried upload sends the whole body again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

namespace registry {

class RequestBody {
public:
    virtual ~RequestBody() = default;
    virtual uint64_t size() const = 0;
    // Up to out.size() bytes from the current position; 0 at the end. Throws rafs::Error.
    virtual size_t read(std::span<uint8_t> out) = 0;
    virtual void rewind() = 0;
};

class BytesBody : public RequestBody {
public:
    explicit BytesBody(std::string bytes) : bytes_(std::move(bytes)) {}
    uint64_t size() const override { return bytes_.size(); }
    size_t read(std::span<uint8_t> out) override;
    void rewind() override { pos_ = 0; }

private:
    std::string bytes_;
    size_t pos_ = 0;
};

class FileBody : public RequestBody {
public:
    // Throws rafs::Error naming `path` if it cannot be opened.
    explicit FileBody(std::filesystem::path path);
    uint64_t size() const override { return size_; }
    size_t read(std::span<uint8_t> out) override;
    void rewind() override;

private:
    std::filesystem::path path_;
    std::ifstream in_;
    uint64_t size_ = 0;
};

}  // namespace registry
