#include "builder/source/LayerStream.h"

#include "format/Error.h"

#include <algorithm>
#include <cstring>

namespace rafs::build {

namespace {
constexpr size_t kInputBlock = 1 << 20;
constexpr uint8_t kGzipMagic[] = {0x1f, 0x8b};
constexpr uint8_t kZstdMagic[] = {0x28, 0xb5, 0x2f, 0xfd};

const char* gzipError(int rc) {
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

}  // namespace

LayerStream::LayerStream(std::unique_ptr<ByteSource> source) : source_(std::move(source)), name_(source_->name()) {
    // Enough bytes to recognise a magic number, unless the input is shorter.
    while (in_.size() < sizeof(kZstdMagic) && fill()) {
    }
    auto starts = [&](std::span<const uint8_t> magic) {
        return in_.size() >= magic.size() && std::equal(magic.begin(), magic.end(), in_.begin());
    };
    if (starts(kGzipMagic)) {
        kind_ = Kind::Gzip;
        gzip_ = std::make_unique<inflate_state>();
        startGzipMember();
    } else if (starts(kZstdMagic)) {
        kind_ = Kind::Zstd;
        zstd_ = ZSTD_createDCtx();
        if (zstd_ == nullptr) fail("{}: cannot initialise zstd", name_);
    }
}

LayerStream::~LayerStream() {
    if (zstd_ != nullptr) ZSTD_freeDCtx(zstd_);
}

bool LayerStream::fill() {
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

size_t LayerStream::read(std::span<uint8_t> out) {
    if (out.empty()) return 0;
    for (;;) {
        const size_t avail = in_.size() - in_pos_;
        if (avail == 0 && !fill()) {
            if (kind_ != Kind::Plain && !stream_done_) fail("{}: truncated compressed stream", name_);
            return 0;
        }
        const uint8_t* src = in_.data() + in_pos_;
        const size_t src_len = in_.size() - in_pos_;
        if (kind_ == Kind::Plain) {
            const size_t n = std::min(src_len, out.size());
            std::memcpy(out.data(), src, n);
            in_pos_ += n;
            return n;
        }
        if (stream_done_) {
            // A new gzip member or zstd frame may follow; anything else is trailing garbage.
            const bool next = kind_ == Kind::Gzip ? src_len >= 2 && src[0] == kGzipMagic[0] && src[1] == kGzipMagic[1]
                                                  : src_len >= 4 && std::memcmp(src, kZstdMagic, 4) == 0;
            if (!next) {
                if (src_len < (kind_ == Kind::Gzip ? 2u : 4u) && fill()) continue;
                if (std::all_of(src, src + src_len, [](uint8_t b) { return b == 0; })) {
                    in_pos_ = in_.size();
                    continue;
                }
                fail("{}: unexpected data after the compressed stream", name_);
            }
            if (kind_ == Kind::Gzip) startGzipMember();
            stream_done_ = false;
        }
        if (kind_ == Kind::Gzip) {
            gzip_->next_in = const_cast<uint8_t*>(src);
            gzip_->avail_in = static_cast<uint32_t>(std::min<size_t>(src_len, UINT32_MAX));
            gzip_->next_out = out.data();
            gzip_->avail_out = static_cast<uint32_t>(std::min<size_t>(out.size(), UINT32_MAX));
            const int rc = isal_inflate(gzip_.get());
            in_pos_ += static_cast<size_t>(gzip_->next_in - src);
            const size_t produced = static_cast<size_t>(gzip_->next_out - out.data());
            if (rc != ISAL_DECOMP_OK) fail("{}: corrupt gzip data: {}", name_, gzipError(rc));
            if (gzip_->block_state == ISAL_BLOCK_FINISH) stream_done_ = true;
            if (produced > 0) return produced;
        } else {
            ZSTD_inBuffer zin{src, src_len, 0};
            ZSTD_outBuffer zout{out.data(), out.size(), 0};
            const size_t rc = ZSTD_decompressStream(zstd_, &zout, &zin);
            in_pos_ += zin.pos;
            if (ZSTD_isError(rc)) fail("{}: corrupt zstd data: {}", name_, ZSTD_getErrorName(rc));
            stream_done_ = rc == 0;
            if (zout.pos > 0) return zout.pos;
        }
    }
}

void LayerStream::startGzipMember() {
    isal_inflate_init(gzip_.get());
    gzip_->crc_flag = ISAL_GZIP;  // parse the member's header, check its CRC-32 and length
}

void LayerStream::finish() {
    std::vector<uint8_t> sink(kInputBlock);
    while (read(sink) > 0) {
    }
}

}  // namespace rafs::build
