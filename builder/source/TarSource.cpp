#include "builder/source/TarSource.h"

#include "builder/source/LayerStream.h"
#include "builder/source/MemberTime.h"
#include "format/BootstrapCheck.h"
#include "format/Error.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace rafs::build {

namespace {

constexpr size_t kMaxNameLength = 255;  // EROFS dirent names
// A member's path, as Linux's PATH_MAX (include/uapi/linux/limits.h) bounds what a runtime
// applying the layer could create; FileTree::followDirs bounds the depth of the tree it may build
// and the symlinks followed: both keep a hostile layer from costing time and memory without end.
constexpr size_t kMaxPathLength = 4095;

// Linux's binary POSIX ACL xattr (uapi linux/posix_acl_xattr.h and linux/posix_acl.h).
constexpr uint32_t kAclXattrVersion = 2;
constexpr uint16_t kAclUserObj = 0x01;
constexpr uint16_t kAclUser = 0x02;
constexpr uint16_t kAclGroupObj = 0x04;
constexpr uint16_t kAclGroup = 0x08;
constexpr uint16_t kAclMask = 0x10;
constexpr uint16_t kAclOther = 0x20;
constexpr uint32_t kAclUndefinedId = 0xffffffff;

struct AclEntry {
    uint16_t tag;
    uint16_t perm;
    uint32_t id;
};

std::string encodeAcl(const std::vector<AclEntry>& acl) {
    std::string out;
    auto append = [&out](uint32_t value, unsigned bytes) {
        for (unsigned i = 0; i < bytes; ++i) {
            out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
        }
    };
    append(kAclXattrVersion, 4);
    for (const AclEntry& e : acl) {
        append(e.tag, 2);
        append(e.perm, 2);
        append(e.id, 4);
    }
    return out;
}

struct ArchiveFree {
    void operator()(archive* a) const { archive_read_free(a); }
};

class TarReader {
public:
    TarReader(std::unique_ptr<ByteSource> input, FileTree& tree, ChunkSink& sink, unsigned layer, std::string diff_id)
        : name_(input->name()), tree_(tree), sink_(sink), layer_(layer), diff_id_(std::move(diff_id)),
          input_(std::move(input)) {}

    void run() {
        archive_.reset(archive_read_new());
        if (!archive_) fail("{}: cannot create a libarchive reader", name_);
        archive* a = archive_.get();
        // An empty input is an empty layer; "empty" only matches zero bytes. Decompression is
        // LayerStream's, so that checksums are verified.
        if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
            archive_read_support_format_empty(a) != ARCHIVE_OK) {
            fail("{}: cannot set up libarchive: {}", name_, archiveError());
        }
        stream_ = std::make_unique<LayerStream>(std::move(input_), !diff_id_.empty());
        if (archive_read_open(a, this, nullptr, &TarReader::readBlock, nullptr) != ARCHIVE_OK) {
            if (stream_error_) std::rethrow_exception(stream_error_);
            fail("{}: {}", name_, archiveError());
        }
        for (;;) {
            archive_entry* entry = nullptr;
            const int r = archive_read_next_header(a, &entry);
            if (r == ARCHIVE_EOF) {
                stream_->finish();
                if (!diff_id_.empty() && stream_->digest() != diff_id_) {
                    fail("{}: the uncompressed layer is {}, not {} as the image's config says (rootfs.diff_ids)", name_,
                         stream_->digest(), diff_id_);
                }
                break;
            }
            // A warning about converting a name to the locale's charset is harmless (the
            // name's bytes are used as stored); any other (a malformed pax record, which
            // libarchive skips, leaving the member its truncated ustar name) or a damaged
            // header (ARCHIVE_RETRY) is an error.
            if (r != ARCHIVE_OK && !(r == ARCHIVE_WARN && archiveError().find("can't be converted") != std::string::npos)) {
                if (stream_error_) std::rethrow_exception(stream_error_);
                if (seen_member_) fail("{}: after member {}: {}", name_, member_, archiveError());
                fail("{}: {}", name_, archiveError());
            }
            seen_member_ = true;
            addEntry(entry);
        }
    }

private:
    // libarchive keeps the block until its next call here, as LayerStream::next's contract allows.
    static la_ssize_t readBlock(archive* a, void* self, const void** buffer) {
        auto* reader = static_cast<TarReader*>(self);
        try {
            const std::span<const uint8_t> block = reader->stream_->next();
            *buffer = block.data();
            return static_cast<la_ssize_t>(block.size());
        } catch (...) {  // nothing may unwind through libarchive
            reader->stream_error_ = std::current_exception();
            archive_set_error(a, EIO, "input error");
            return -1;
        }
    }

    // A member's content, as libarchive's data blocks with the holes of sparse members between
    // and after them filled with zeros.
    class MemberData final : public FileData {
    public:
        MemberData(TarReader& reader, archive_entry* entry)
            : reader_(reader), size_(static_cast<uint64_t>(archive_entry_size(entry))),
              sparse_(archive_entry_sparse_count(entry) > 0) {}

        void read(std::span<uint8_t> out) override {
            if (out.size() > size_ - pos_) reader_.failMember("read past the end of the data");
            while (!out.empty()) {
                if (pos_ >= block_offset_ + block_size_) nextBlock();
                size_t n = 0;
                if (pos_ < block_offset_) {
                    n = static_cast<size_t>(std::min<uint64_t>(out.size(), block_offset_ - pos_));
                    std::memset(out.data(), 0, n);
                } else {
                    const uint64_t in_block = pos_ - block_offset_;
                    n = static_cast<size_t>(std::min<uint64_t>(out.size(), block_size_ - in_block));
                    std::memcpy(out.data(), block_ + in_block, n);
                }
                out = out.subspan(n);
                pos_ += n;
            }
        }

        std::string name() const override { return fmt::format("{}: member {}", reader_.name_, reader_.member_); }

        bool skipHole(uint64_t length) override {
            if (length == 0 || length > size_ - pos_) return false;
            if (pos_ >= block_offset_ + block_size_) nextBlock();
            if (pos_ >= block_offset_ || block_offset_ - pos_ < length) return false;
            pos_ += length;
            return true;
        }

    private:
        void nextBlock() {
            const void* buf = nullptr;
            size_t size = 0;
            la_int64_t offset = 0;
            const int r = archive_read_data_block(reader_.archive_.get(), &buf, &size, &offset);
            if (r == ARCHIVE_EOF) {
                // Sparse members may end in a hole that libarchive reports as nothing at all.
                if (!sparse_) reader_.failMember("data shorter than its size {}", size_);
                block_ = nullptr;
                block_offset_ = size_;
                block_size_ = 0;
                return;
            }
            if (r != ARCHIVE_OK) {
                if (reader_.stream_error_) std::rethrow_exception(reader_.stream_error_);
                reader_.failMember("{}", reader_.archiveError());
            }
            const auto start = static_cast<uint64_t>(offset);
            if (offset < 0 || start < pos_ || start > size_ || size > size_ - start) {
                reader_.failMember("data block at {} of {} bytes outside the member", offset, size);
            }
            block_ = static_cast<const uint8_t*>(buf);
            block_offset_ = start;
            block_size_ = size;
        }

        TarReader& reader_;
        const uint64_t size_;
        const bool sparse_;
        uint64_t pos_ = 0;
        const uint8_t* block_ = nullptr;
        uint64_t block_offset_ = 0;
        uint64_t block_size_ = 0;
    };

    template <typename... Args>
    [[noreturn]] void failMember(fmt::format_string<Args...> format, Args&&... args) const {
        fail("{}: member {}: {}", name_, member_, fmt::format(format, std::forward<Args>(args)...));
    }

    std::string archiveError() const {
        const char* message = archive_error_string(archive_.get());
        return message != nullptr ? message : "unknown libarchive error";
    }

    // The components of a member path or hardlink target, cleaned as containerd's archive.Apply
    // cleans them (filepath.Clean, then fs.RootPath: archive/tar.go): "." and empty ones dropped,
    // ".." taking the one before it away and stopping at the root, and an absolute path starting
    // at the root, so that the image holds what a runtime applying the layer makes. A member that
    // cleans to the root is the root entry, whose attributes the image takes (umoci and GNU tar
    // apply them too); containerd skips it. One that is not a directory is refused rather than
    // dropped unseen. The length bound is on the name as written, which bounds the cleaned one:
    // a name past PATH_MAX that ".." would shorten is no layer a tool writes.
    std::vector<std::string_view> components(std::string_view path) const {
        if (path.size() > kMaxPathLength) failMember("path longer than {} bytes", kMaxPathLength);
        std::vector<std::string_view> parts;
        for (std::string_view rest = path; !rest.empty();) {
            const size_t slash = rest.find('/');
            const std::string_view part = rest.substr(0, slash);
            rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
            if (part.empty() || part == ".") continue;
            if (part == "..") {
                if (!parts.empty()) parts.pop_back();
                continue;
            }
            parts.push_back(part);
        }
        // Of the cleaned name: a last component may be a whiteout of a name of the longest length.
        for (size_t i = 0; i < parts.size(); ++i) {
            const bool whiteout = i + 1 == parts.size() && FileTree::isWhiteout(parts[i]);
            if (parts[i].size() > kMaxNameLength + (whiteout ? FileTree::kWhiteoutPrefix.size() : 0)) {
                failMember("path component longer than 255 bytes");
            }
        }
        return parts;
    }

    // The directory that holds the entry `parts` names (a non-empty path: all its components but
    // the last), found as a runtime applying the layer finds it in the tree built so far
    // (FileTree::followDirs), missing directories made when `create`; otherwise a missing or
    // non-directory parent gives nullptr.
    Node* parentOf(std::span<const std::string_view> parts, bool create) {
        unsigned links = 0;
        try {
            return tree_.followDirs(tree_.root(), std::deque<std::string>(parts.begin(), parts.end() - 1), links,
                                    create ? std::optional<unsigned>(layer_) : std::nullopt);
        } catch (const Error& e) {
            failMember("{}", e.what());
        }
    }

    void addEntry(archive_entry* entry) {
        const char* pathname = archive_entry_pathname(entry);
        member_ = pathname != nullptr ? pathname : "";
        const auto parts = components(member_);
        if (!parts.empty() && FileTree::isWhiteout(parts.back())) {
            if (!tree_.applyWhiteout(parentOf(parts, false), parts.back(), layer_)) failMember("invalid whiteout name");
            return;
        }
        if (const char* target = archive_entry_hardlink(entry)) {
            addHardlink(parts, target);
            return;
        }
        auto inode = makeInode(entry);
        if (parts.empty() && !inode->isDir()) failMember("the root entry is not a directory");
        if (inode->isReg()) {
            // A later member of this layer may replace it before the sink is finished.
            tree_.retain(inode);
        }
        Inode& added = parts.empty() ? *tree_.put("/", std::move(inode), layer_).inode
                                     : *tree_.put(*parentOf(parts, true), parts.back(), std::move(inode), layer_).inode;
        if (added.isReg()) {
            MemberData data(*this, entry);
            sink_.addFile(added, data);
        }
    }

    // The target is looked up as the member path is (its parents' symlinks followed), itself
    // taken as it is: a link to a symlink links the symlink.
    void addHardlink(const std::vector<std::string_view>& parts, const char* target) {
        const auto target_parts = components(target);
        Node* existing = &tree_.root();
        if (!target_parts.empty()) {
            Node* dir = parentOf(target_parts, false);
            existing = dir != nullptr ? FileTree::child(*dir, target_parts.back()) : nullptr;
        }
        if (existing == nullptr) failMember("hardlink target {} does not exist", target);
        if (existing->inode->isDir()) failMember("hardlink target {} is a directory", target);
        if (parts.empty()) failMember("the root entry is not a directory");
        std::shared_ptr<Inode> inode = existing->inode;
        tree_.put(*parentOf(parts, true), parts.back(), std::move(inode), layer_);
    }

    template <typename T>
    uint32_t toU32(T value, std::string_view what) const {
        if (value < 0 || static_cast<uint64_t>(value) > std::numeric_limits<uint32_t>::max()) {
            failMember("{} {} out of range", what, value);
        }
        return static_cast<uint32_t>(value);
    }

    std::shared_ptr<Inode> makeInode(archive_entry* entry) const {
        auto inode = std::make_shared<Inode>();
        const auto type = archive_entry_filetype(entry);
        switch (type) {
        case AE_IFREG:
        case AE_IFDIR:
        case AE_IFLNK:
        case AE_IFCHR:
        case AE_IFBLK:
        case AE_IFIFO:
            break;
        default:
            failMember("unsupported entry type {:#o}", type);
        }
        inode->mode = archive_entry_mode(entry);
        inode->uid = toU32(archive_entry_uid(entry), "uid");
        inode->gid = toU32(archive_entry_gid(entry), "gid");
        if (archive_entry_mtime_is_set(entry) != 0) {
            try {
                const MemberTime mtime = memberMtime(entry);
                inode->mtime_sec = mtime.sec;
                inode->mtime_nsec = mtime.nsec;
            } catch (const Error& e) {
                failMember("{}", e.what());
            }
        }
        if (type == AE_IFREG) {
            const la_int64_t size = archive_entry_size(entry);
            if (size < 0) failMember("negative size {}", size);
            inode->size = static_cast<uint64_t>(size);
        } else if (type == AE_IFLNK) {
            const char* target = archive_entry_symlink(entry);
            if (target == nullptr) failMember("symlink without a target");
            inode->symlink_target = target;
            // As symlink(2) bounds it, and format/BootstrapCheck.h after it: the kernel would cut a
            // longer one short.
            if (inode->symlink_target.empty() || inode->symlink_target.size() > rafs::kMaxSymlinkSize) {
                failMember("symlink target of {} bytes (1 to {})", inode->symlink_target.size(), rafs::kMaxSymlinkSize);
            }
            inode->size = inode->symlink_target.size();
            // Linux ignores and reports 0777 for symlinks, whatever the header says.
            inode->mode = S_IFLNK | 0777;
        } else if (type == AE_IFCHR || type == AE_IFBLK) {
            inode->rdev_major = toU32(archive_entry_rdevmajor(entry), "device major");
            inode->rdev_minor = toU32(archive_entry_rdevminor(entry), "device minor");
            // What Linux's dev_t holds (12-bit major, 20-bit minor), as EROFS stores it
            // (erofs::encodeDev): a larger number would become another device.
            if (inode->rdev_major >= (1u << 12) || inode->rdev_minor >= (1u << 20)) {
                failMember("device {}:{} is not a Linux device number", inode->rdev_major, inode->rdev_minor);
            }
        }
        archive_entry_xattr_reset(entry);
        const char* name = nullptr;
        const void* value = nullptr;
        size_t size = 0;
        while (archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK) {
            std::string_view problem = xattrProblem(name, size);
            if (problem.empty()) problem = xattrTypeProblem(name, inode->mode);
            if (!problem.empty()) failMember("xattr {}: {}", name, problem);
            // libarchive may give no buffer for an empty value.
            inode->setXattr(name, size == 0 ? std::string()
                                            : std::string(static_cast<const char*>(value), size));
        }
        addAcls(entry, *inode);
        if (std::string_view problem = xattrSetProblem(inode->xattrs); !problem.empty()) failMember("{}", problem);
        return inode;
    }

    void addAcls(archive_entry* entry, Inode& inode) const {
        if ((archive_entry_acl_types(entry) & ARCHIVE_ENTRY_ACL_TYPE_NFS4) != 0) {
            failMember("NFSv4 ACLs are not supported by RAFS v6");
        }
        static constexpr std::array<std::pair<int, std::string_view>, 2> kKinds{{
            {ARCHIVE_ENTRY_ACL_TYPE_ACCESS, "system.posix_acl_access"},
            {ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, "system.posix_acl_default"},
        }};
        for (const auto& [type, xattr] : kKinds) {
            // An archiver that also stored the kernel's binary form (GNU tar --xattrs) is taken
            // at its word; its text ACL may then name users without ids.
            const bool stored = std::any_of(inode.xattrs.begin(), inode.xattrs.end(),
                                            [&](const Xattr& x) { return x.first == xattr; });
            const std::vector<AclEntry> acl = readAcl(entry, type, !stored);
            if (acl.empty()) continue;
            if (type == ARCHIVE_ENTRY_ACL_TYPE_ACCESS) {
                // libarchive moved the group entry's bits into the mode's group bits; with a
                // mask, the mode holds the mask's bits, as the kernel keeps it.
                auto mask = std::find_if(acl.begin(), acl.end(),
                                         [](const AclEntry& e) { return e.tag == kAclMask; });
                if (mask != acl.end()) {
                    inode.mode = (inode.mode & ~mode_t{070}) | (mode_t{mask->perm} << 3);
                }
            }
            if (!stored) inode.setXattr(std::string(xattr), encodeAcl(acl));
        }
    }

    // The ACL of one type (the access one includes the owner, group and other entries that
    // libarchive derives from the mode), sorted by tag and then id as the kernel requires.
    std::vector<AclEntry> readAcl(archive_entry* entry, int type, bool need_ids) const {
        std::vector<AclEntry> acl;
        if (archive_entry_acl_reset(entry, type) == 0) return acl;
        int entry_type = 0;
        int perm = 0;
        int tag = 0;
        int qual = 0;
        const char* name = nullptr;
        while (archive_entry_acl_next(entry, type, &entry_type, &perm, &tag, &qual, &name) ==
               ARCHIVE_OK) {
            if ((perm & ~7) != 0) failMember("ACL permissions {:#x} not supported", perm);
            AclEntry e{0, static_cast<uint16_t>(perm), kAclUndefinedId};
            switch (tag) {
            case ARCHIVE_ENTRY_ACL_USER_OBJ: e.tag = kAclUserObj; break;
            case ARCHIVE_ENTRY_ACL_USER: e.tag = kAclUser; break;
            case ARCHIVE_ENTRY_ACL_GROUP_OBJ: e.tag = kAclGroupObj; break;
            case ARCHIVE_ENTRY_ACL_GROUP: e.tag = kAclGroup; break;
            case ARCHIVE_ENTRY_ACL_MASK: e.tag = kAclMask; break;
            case ARCHIVE_ENTRY_ACL_OTHER: e.tag = kAclOther; break;
            default: failMember("ACL entry tag {} not supported", tag);
            }
            if (e.tag == kAclUser || e.tag == kAclGroup) {
                if (qual >= 0) {
                    e.id = static_cast<uint32_t>(qual);
                } else if (need_ids) {
                    failMember("ACL entry for {} has no numeric id", name != nullptr ? name : "?");
                }
            }
            acl.push_back(e);
        }
        std::sort(acl.begin(), acl.end(), [](const AclEntry& x, const AclEntry& y) {
            return std::pair(x.tag, x.id) < std::pair(y.tag, y.id);
        });
        return acl;
    }

    const std::string name_;  // for messages
    FileTree& tree_;
    ChunkSink& sink_;
    const unsigned layer_;
    const std::string diff_id_;
    std::unique_ptr<ByteSource> input_;  // until the stream takes it
    std::unique_ptr<archive, ArchiveFree> archive_;
    std::unique_ptr<LayerStream> stream_;
    std::exception_ptr stream_error_;
    std::string member_;  // the current member's path as stored, for messages
    bool seen_member_ = false;
};

}  // namespace

void addTar(std::unique_ptr<ByteSource> input, FileTree& tree, ChunkSink& sink, unsigned layer,
            const std::string& diff_id) {
    TarReader(std::move(input), tree, sink, layer, diff_id).run();
}

void addTar(const std::string& input, FileTree& tree, ChunkSink& sink, unsigned layer) {
    addTar(std::make_unique<FileSource>(input), tree, sink, layer);
}

}  // namespace rafs::build
