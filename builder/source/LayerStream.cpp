#include "builder/source/LayerStream.h"

#include "format/Error.h"

#include <isa-l/igzip_lib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

namespace rafs::build {

namespace {

constexpr size_t kInputBlock = 1 << 20;
constexpr size_t kOutputBlock = 1 << 20;
// Decompressed blocks waiting for the reader: enough to ride out the pauses of the tar thread
// (a chunk pipeline window filling up), few enough to bound memory.
constexpr size_t kBlocksAhead = 8;
constexpr uint8_t kGzipMagic[] = {0x1f, 0x8b};
constexpr uint8_t kZstdMagic[] = {0x28, 0xb5, 0x2f, 0xfd};

bool startsWith(std::span<const uint8_t> in, std::span<const uint8_t> magic) {
    return in.size() >= magic.size() && std::equal(magic.begin(), magic.end(), in.begin());
}

uint32_t clamp32(size_t n) { return static_cast<uint32_t>(std::min<size_t>(n, UINT32_MAX)); }

// Gzip members or zstd frames, one after another.
class Decoder {
public:
    struct Step {
        size_t consumed = 0;
        size_t produced = 0;
        bool done = false;  // the member or frame ended
    };
    virtual ~Decoder() = default;
    // Whether `in` begins another member or frame.
    virtual bool startsMember(std::span<const uint8_t> in) const = 0;
    virtual void start() = 0;  // a member or frame begins
    virtual Step step(std::span<const uint8_t> in, std::span<uint8_t> out) = 0;
};

class GzipDecoder final : public Decoder {
public:
    explicit GzipDecoder(const std::string& name) : name_(name), state_(std::make_unique<inflate_state>()) {}

    static bool begins(std::span<const uint8_t> in) { return startsWith(in, kGzipMagic); }
    bool startsMember(std::span<const uint8_t> in) const override { return begins(in); }

    void start() override {
        isal_inflate_init(state_.get());
        state_->crc_flag = ISAL_GZIP;  // parse the member's header, check its CRC-32 and length
    }

    Step step(std::span<const uint8_t> in, std::span<uint8_t> out) override {
        state_->next_in = const_cast<uint8_t*>(in.data());
        state_->avail_in = clamp32(in.size());
        state_->next_out = out.data();
        state_->avail_out = clamp32(out.size());
        const int rc = isal_inflate(state_.get());
        if (rc != ISAL_DECOMP_OK) fail("{}: corrupt gzip data: {}", name_, error(rc));
        return {static_cast<size_t>(state_->next_in - in.data()), static_cast<size_t>(state_->next_out - out.data()),
                state_->block_state == ISAL_BLOCK_FINISH};
    }

private:
    static const char* error(int rc) {
        switch (rc) {
        case ISAL_INVALID_BLOCK: return "invalid deflate block";
        case ISAL_INVALID_SYMBOL: return "invalid deflate symbol";
        case ISAL_INVALID_LOOKBACK: return "invalid distance";
        case ISAL_INVALID_WRAPPER: return "invalid gzip header";
        case ISAL_UNSUPPORTED_METHOD: return "unsupported compression method";
        case ISAL_INCORRECT_CHECKSUM: return "CRC or length mismatch";
        default: return "inflate failed";
        }
    }

    const std::string& name_;
    std::unique_ptr<inflate_state> state_;  // large (its history window): on the heap
};

class ZstdDecoder final : public Decoder {
public:
    explicit ZstdDecoder(const std::string& name) : name_(name), ctx_(ZSTD_createDCtx()) {
        if (ctx_ == nullptr) fail("{}: cannot initialise zstd", name_);
    }

    // A frame, or a skippable frame (RFC 8878 section 3.1.2: magic 0x184D2A50 to 0x184D2A5F,
    // little-endian), which holds metadata such as the table of contents that zstd:chunked layers
    // (containers/storage) put before their footer; ZSTD_decompressStream skips it.
    static bool begins(std::span<const uint8_t> in) {
        return startsWith(in, kZstdMagic) ||
               (in.size() >= 4 && (in[0] & 0xf0) == 0x50 && in[1] == 0x2a && in[2] == 0x4d && in[3] == 0x18);
    }
    bool startsMember(std::span<const uint8_t> in) const override { return begins(in); }

    void start() override {}  // ZSTD_decompressStream begins the next frame by itself

    Step step(std::span<const uint8_t> in, std::span<uint8_t> out) override {
        ZSTD_inBuffer zin{in.data(), in.size(), 0};
        ZSTD_outBuffer zout{out.data(), out.size(), 0};
        const size_t rc = ZSTD_decompressStream(ctx_.get(), &zout, &zin);
        if (ZSTD_isError(rc)) fail("{}: corrupt zstd data: {}", name_, ZSTD_getErrorName(rc));
        return {zin.pos, zout.pos, rc == 0};
    }

private:
    struct Free {
        void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
    };
    const std::string& name_;
    std::unique_ptr<ZSTD_DCtx, Free> ctx_;
};

}  // namespace

LayerStream::LayerStream(std::unique_ptr<ByteSource> source, bool digest)
    : source_(std::move(source)), name_(source_->name()),
      hasher_(digest ? std::optional<rafs::Hasher>(rafs::Digester::Sha256) : std::nullopt), thread_([this] { run(); }) {}

LayerStream::~LayerStream() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
}

void LayerStream::run() {
    try {
        decompress();
        std::lock_guard lock(mutex_);
        ended_ = true;
    } catch (const Stopped&) {
        return;
    } catch (...) {
        std::lock_guard lock(mutex_);
        error_ = std::current_exception();
    }
    changed_.notify_all();
}

void LayerStream::decompress() {
    // Enough bytes to recognise a magic number, unless the input is shorter.
    while (in_.size() < sizeof(kZstdMagic) && fill()) {
    }
    const auto unread = [&] { return std::span<const uint8_t>(in_).subspan(in_pos_); };
    std::unique_ptr<Decoder> decoder;  // none: a plain tar
    if (GzipDecoder::begins(unread())) {
        decoder = std::make_unique<GzipDecoder>(name_);
    } else if (ZstdDecoder::begins(unread())) {
        decoder = std::make_unique<ZstdDecoder>(name_);
    }
    Block out{std::make_unique_for_overwrite<uint8_t[]>(kOutputBlock), 0};
    bool between = true;  // at the start, or a member or frame ended exactly here
    for (;;) {
        if (in_pos_ == in_.size() && !fill()) break;
        const std::span<const uint8_t> src(in_.data() + in_pos_, in_.size() - in_pos_);
        const std::span<uint8_t> dst(out.bytes.get() + out.size, kOutputBlock - out.size);
        if (!decoder) {
            const size_t n = std::min(src.size(), dst.size());
            std::memcpy(dst.data(), src.data(), n);
            in_pos_ += n;
            out.size += n;
        } else {
            if (between) {
                // Another member or frame may follow, or zeros (padding); anything else is
                // trailing garbage.
                if (!decoder->startsMember(src)) {
                    if (src.size() < sizeof(kZstdMagic) && fill()) continue;
                    if (!std::all_of(src.begin(), src.end(), [](uint8_t b) { return b == 0; })) {
                        fail("{}: unexpected data after the compressed stream", name_);
                    }
                    in_pos_ = in_.size();
                    continue;
                }
                decoder->start();
                between = false;
            }
            const Decoder::Step s = decoder->step(src, dst);
            in_pos_ += s.consumed;
            out.size += s.produced;
            between = s.done;
            // No progress: the decoder needs more input than is left.
            if (s.consumed == 0 && s.produced == 0 && !s.done && !fill()) break;
        }
        if (out.size == kOutputBlock) emit(out);
    }
    if (decoder && !between) fail("{}: truncated compressed stream", name_);
    if (out.size > 0) emit(out);
}

bool LayerStream::fill() {
    {
        std::lock_guard lock(mutex_);
        if (stopping_) throw Stopped{};
    }
    if (in_eof_) return false;
    if (in_pos_ > 0) {
        in_.erase(in_.begin(), in_.begin() + static_cast<ptrdiff_t>(in_pos_));
        in_pos_ = 0;
    }
    const size_t old = in_.size();
    in_.resize(old + kInputBlock);
    const size_t n = source_->read({in_.data() + old, kInputBlock});
    in_.resize(old + n);
    if (n == 0) in_eof_ = true;
    return n > 0;
}

void LayerStream::emit(Block& block) {
    if (hasher_) hasher_->update({block.bytes.get(), block.size});
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopping_ || ready_.size() < kBlocksAhead; });
    if (stopping_) throw Stopped{};
    ready_.push_back(std::move(block));
    changed_.notify_all();
    if (!spare_.empty()) {
        block = std::move(spare_.back());
        spare_.pop_back();
    } else {
        lock.unlock();
        block.bytes = std::make_unique_for_overwrite<uint8_t[]>(kOutputBlock);
    }
    block.size = 0;
}

std::span<const uint8_t> LayerStream::next() {
    std::unique_lock lock(mutex_);
    if (current_.bytes) spare_.push_back(std::move(current_));
    changed_.wait(lock, [&] { return !ready_.empty() || ended_ || error_; });
    if (ready_.empty()) {
        if (error_) std::rethrow_exception(error_);
        return {};
    }
    current_ = std::move(ready_.front());
    ready_.pop_front();
    changed_.notify_all();
    return {current_.bytes.get(), current_.size};
}

void LayerStream::finish() {
    while (!next().empty()) {
    }
}

std::string LayerStream::digest() const {
    // The thread is done with the hasher once the stream ended (finish()).
    return hasher_ ? "sha256:" + rafs::toHex(hasher_->current()) : std::string();
}

}  // namespace rafs::build
