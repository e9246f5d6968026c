#include "builder/commands/Build.h"
#include "builder/source/TarSource.h"
#include "format/Bootstrap.h"
#include "format/Codec.h"
#include "format/Error.h"
#include "tests/unit/SourceTestUtil.h"

#include <archive.h>
#include <archive_entry.h>
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <tuple>

using namespace rafs::build;
using rafs::build::test::RecordingSink;
using rafs::build::test::TempDir;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

enum class Filter { None, Gzip, Zstd };

// Test archives written with libarchive's own writer.
class TarWriter {
public:
    explicit TarWriter(const std::string& path, int format = ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE,
                       Filter filter = Filter::None)
        : a_(archive_write_new()) {
        REQUIRE(archive_write_set_format(a_, format) == ARCHIVE_OK);
        if (filter == Filter::Gzip) REQUIRE(archive_write_add_filter_gzip(a_) == ARCHIVE_OK);
        if (filter == Filter::Zstd) REQUIRE(archive_write_add_filter_zstd(a_) == ARCHIVE_OK);
        REQUIRE(archive_write_open_filename(a_, path.c_str()) == ARCHIVE_OK);
    }
    TarWriter(const TarWriter&) = delete;
    TarWriter& operator=(const TarWriter&) = delete;
    ~TarWriter() { archive_write_free(a_); }

    // Adds a member; `setup` sets anything else on the entry before its header is written.
    void add(const std::string& path, mode_t mode, const std::string& data = {},
             const std::function<void(archive_entry*)>& setup = {}) {
        archive_entry* e = archive_entry_new();
        archive_entry_set_pathname(e, path.c_str());
        archive_entry_set_mode(e, mode);
        archive_entry_set_mtime(e, 1700000000, 0);
        if (S_ISREG(mode)) archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
        if (setup) setup(e);
        REQUIRE(archive_write_header(a_, e) == ARCHIVE_OK);
        if (!data.empty()) {
            REQUIRE(archive_write_data(a_, data.data(), data.size()) == static_cast<la_ssize_t>(data.size()));
        }
        archive_entry_free(e);
    }
    void file(const std::string& path, const std::string& data) { add(path, S_IFREG | 0644, data); }
    void dir(const std::string& path) { add(path, S_IFDIR | 0755); }
    void symlink(const std::string& path, const std::string& target) {
        add(path, S_IFLNK | 0777, {}, [&](archive_entry* e) { archive_entry_set_symlink(e, target.c_str()); });
    }
    void hardlink(const std::string& path, const std::string& target) {
        add(path, S_IFREG | 0644, {}, [&](archive_entry* e) {
            archive_entry_set_size(e, 0);
            archive_entry_set_hardlink(e, target.c_str());
        });
    }
    // A pax sparse member of `size` bytes holding `regions` (offset -> bytes), zeros elsewhere.
    void sparse(const std::string& path, uint64_t size, const std::map<uint64_t, std::string>& regions) {
        archive_entry* e = archive_entry_new();
        archive_entry_set_pathname(e, path.c_str());
        archive_entry_set_mode(e, S_IFREG | 0600);
        archive_entry_set_size(e, static_cast<la_int64_t>(size));
        for (const auto& [offset, bytes] : regions) {
            archive_entry_sparse_add_entry(e, static_cast<la_int64_t>(offset), static_cast<la_int64_t>(bytes.size()));
        }
        REQUIRE(archive_write_header(a_, e) == ARCHIVE_OK);
        archive_entry_free(e);
        // The writer takes the whole content and skips the holes.
        std::vector<char> piece(1 << 20);
        for (uint64_t at = 0; at < size; at += piece.size()) {
            const auto n = static_cast<size_t>(std::min<uint64_t>(piece.size(), size - at));
            std::fill(piece.begin(), piece.end(), 0);
            for (const auto& [offset, bytes] : regions) {
                for (size_t i = 0; i < bytes.size(); ++i) {
                    if (offset + i >= at && offset + i < at + n) piece[offset + i - at] = bytes[i];
                }
            }
            REQUIRE(archive_write_data(a_, piece.data(), n) == static_cast<la_ssize_t>(n));
        }
    }
    void close() { REQUIRE(archive_write_close(a_) == ARCHIVE_OK); }

private:
    archive* a_;
};

std::string readFile(const std::string& path) {
    std::string data(std::filesystem::file_size(path), '\0');
    std::ifstream in(path, std::ios::binary);
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    REQUIRE(in.good());
    return data;
}

void writeFile(const std::string& path, const std::string& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    REQUIRE(out.good());
}

// Linux's binary POSIX ACL: version 2, then {tag, perm, id} little-endian.
std::string aclXattr(std::initializer_list<std::tuple<uint16_t, uint16_t, uint32_t>> entries) {
    std::string out;
    auto le = [&](uint32_t v, int n) {
        for (int i = 0; i < n; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
    };
    le(2, 4);
    for (const auto& [tag, perm, id] : entries) {
        le(tag, 2);
        le(perm, 2);
        le(id, 4);
    }
    return out;
}
constexpr uint32_t kNoId = 0xffffffff;

std::vector<std::string> paths(FileTree& tree) {
    std::vector<std::string> out;
    tree.walk([&](Node&, const std::string& path) { out.push_back(path); });
    return out;
}

const Inode& inodeAt(FileTree& tree, const std::string& path) {
    Node* node = tree.find(path);
    INFO(path);
    REQUIRE(node != nullptr);
    return *node->inode;
}

// One ustar header block with any typeflag, for types libarchive's writer refuses to write.
std::string ustarHeader(const std::string& name, char typeflag) {
    std::string h(512, '\0');
    h.replace(0, name.size(), name);
    h.replace(100, 7, "0000644");
    h.replace(108, 7, "0000000");
    h.replace(116, 7, "0000000");
    h.replace(124, 11, "00000000000");
    h.replace(136, 11, "00000000000");
    h[156] = typeflag;
    h.replace(257, 6, std::string("ustar\0", 6));
    h.replace(263, 2, "00");
    h.replace(148, 8, "        ");
    unsigned sum = 0;
    for (char c : h) sum += static_cast<unsigned char>(c);
    char field[8];
    std::snprintf(field, sizeof field, "%06o", sum);
    h.replace(148, 7, std::string(field, 6) + '\0');
    return h;
}

std::string randomBytes(size_t n) {
    std::mt19937 gen(42);
    std::string out(n, '\0');
    for (char& c : out) c = static_cast<char>(gen());
    return out;
}

}  // namespace

TEST_CASE("tar: every entry type with its metadata", "[tar]") {
    const auto filter = GENERATE(Filter::None, Filter::Gzip, Filter::Zstd);
    TempDir tmp;
    const std::string tar = tmp / "layer.tar";
    {
        TarWriter w(tar, ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, filter);
        w.add("./", S_IFDIR | 0711, {}, [](archive_entry* e) { archive_entry_set_uid(e, 5); });
        w.add("./etc/", S_IFDIR | 02755);
        w.add("./etc/passwd", S_IFREG | 04755, "root:x:0:0\n", [](archive_entry* e) {
            archive_entry_set_uid(e, 1000);
            archive_entry_set_gid(e, 4294967295u);
            archive_entry_set_mtime(e, 1234567890, 123456789);
            archive_entry_xattr_add_entry(e, "user.b", "2", 1);
            archive_entry_xattr_add_entry(e, "user.a", "1", 1);
            archive_entry_xattr_add_entry(e, "security.capability", "\x01\0\0\x02", 4);
            archive_entry_xattr_add_entry(e, "trusted.empty", "", 0);
        });
        w.add("tmp/", S_IFDIR | 01777, {}, [](archive_entry* e) { archive_entry_set_mtime(e, -5, 7); });
        w.symlink("etc/link", "../tmp/nowhere");
        w.hardlink("etc/passwd-", "etc/passwd");
        w.add("dev/null", S_IFCHR | 0666, {}, [](archive_entry* e) {
            archive_entry_set_rdevmajor(e, 1);
            archive_entry_set_rdevminor(e, 3);
        });
        w.add("dev/sda1", S_IFBLK | 0660, {}, [](archive_entry* e) {
            archive_entry_set_rdevmajor(e, 8);
            archive_entry_set_rdevminor(e, 300);
        });
        w.add("dev/fifo", S_IFIFO | 0600);
        w.file("empty", "");
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tar, tree, sink, 0);

    CHECK(paths(tree) == std::vector<std::string>{"/", "/dev", "/dev/fifo", "/dev/null", "/dev/sda1",
                                                  "/empty", "/etc", "/etc/link", "/etc/passwd",
                                                  "/etc/passwd-", "/tmp"});
    const Inode& root = inodeAt(tree, "/");
    CHECK(root.mode == (S_IFDIR | 0711));
    CHECK(root.uid == 5);

    const Inode& passwd = inodeAt(tree, "etc/passwd");
    CHECK(passwd.mode == (S_IFREG | 04755));
    CHECK(passwd.uid == 1000);
    CHECK(passwd.gid == 4294967295u);
    CHECK(passwd.mtime_sec == 1234567890);
    CHECK(passwd.mtime_nsec == 123456789);
    CHECK(passwd.size == 11);
    CHECK(passwd.xattrs == std::vector<Xattr>{{"security.capability", std::string("\x01\0\0\x02", 4)},
                                              {"trusted.empty", ""},
                                              {"user.a", "1"},
                                              {"user.b", "2"}});
    CHECK(&inodeAt(tree, "etc/passwd-") == &passwd);
    CHECK(inodeAt(tree, "etc").mode == (S_IFDIR | 02755));
    CHECK(inodeAt(tree, "tmp").mode == (S_IFDIR | 01777));
    // libarchive's writer stores (-5 s, 7 ns) as "mtime=-5.000000007", which is -5.000000007 s:
    // GNU tar extracts it as -6 s + 999999993 ns, and so must the image hold it.
    CHECK(inodeAt(tree, "tmp").mtime_sec == -6);
    CHECK(inodeAt(tree, "tmp").mtime_nsec == 999999993);

    const Inode& link = inodeAt(tree, "etc/link");
    CHECK(link.isLink());
    CHECK(link.symlink_target == "../tmp/nowhere");
    CHECK(link.size == 14);

    const Inode& null = inodeAt(tree, "dev/null");
    CHECK(null.mode == (S_IFCHR | 0666));
    CHECK(null.rdev_major == 1);
    CHECK(null.rdev_minor == 3);
    const Inode& sda1 = inodeAt(tree, "dev/sda1");
    CHECK(sda1.mode == (S_IFBLK | 0660));
    CHECK(sda1.rdev_major == 8);
    CHECK(sda1.rdev_minor == 300);
    CHECK(inodeAt(tree, "dev/fifo").mode == (S_IFIFO | 0600));
    // dev/ had no entry of its own.
    const Inode& dev = inodeAt(tree, "dev");
    CHECK(dev.mode == (S_IFDIR | 0755));
    CHECK(dev.uid == 0);
    CHECK(dev.mtime_sec == 0);

    REQUIRE(sink.files.size() == 2);
    CHECK(sink.files[0].inode == &passwd);
    CHECK(sink.files[0].content == "root:x:0:0\n");
    CHECK(sink.files[1].inode == &inodeAt(tree, "empty"));
    CHECK(sink.files[1].bytes_read == 0);
}

TEST_CASE("tar: ustar and GNU formats", "[tar]") {
    const int format = GENERATE(ARCHIVE_FORMAT_TAR_USTAR, ARCHIVE_FORMAT_TAR_GNUTAR);
    TempDir tmp;
    const std::string tar = tmp / "layer.tar";
    const std::string long_name = "d/" + std::string(200, 'n');  // beyond ustar's split name
    {
        TarWriter w(tar, format);
        w.dir("d");
        w.file("d/f", "data");
        w.hardlink("d/h", "d/f");
        w.symlink("d/s", "f");
        w.add("d/c", S_IFCHR | 0600, {}, [](archive_entry* e) {
            archive_entry_set_rdevmajor(e, 4);
            archive_entry_set_rdevminor(e, 5);
        });
        w.add("d/p", S_IFIFO | 0644);
        if (format == ARCHIVE_FORMAT_TAR_GNUTAR) w.file(long_name, "long");
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tar, tree, sink, 0);
    CHECK(inodeAt(tree, "d/f").size == 4);
    CHECK(&inodeAt(tree, "d/h") == &inodeAt(tree, "d/f"));
    CHECK(inodeAt(tree, "d/s").symlink_target == "f");
    CHECK(inodeAt(tree, "d/c").rdev_minor == 5);
    CHECK(S_ISFIFO(inodeAt(tree, "d/p").mode));
    CHECK(inodeAt(tree, "d/f").mtime_sec == 1700000000);
    if (format == ARCHIVE_FORMAT_TAR_GNUTAR) {
        CHECK(inodeAt(tree, long_name).size == 4);
        CHECK(sink.files.size() == 2);
    }
}

TEST_CASE("tar: POSIX ACLs become the kernel's xattrs", "[tar]") {
    TempDir tmp;
    const std::string tar = tmp / "acl.tar";
    const std::string stored = aclXattr({{0x01, 6, kNoId}, {0x02, 4, 77}, {0x04, 4, kNoId},
                                         {0x10, 6, kNoId}, {0x20, 0, kNoId}});
    {
        TarWriter w(tar);
        w.add("f", S_IFREG | 0674, "x", [](archive_entry* e) {
            // Out of order on purpose: the xattr must be sorted by tag, then id.
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 7, ARCHIVE_ENTRY_ACL_MASK, -1, nullptr);
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 4, ARCHIVE_ENTRY_ACL_GROUP, 50, "staff");
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 6, ARCHIVE_ENTRY_ACL_USER, 2000, "bob");
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 6, ARCHIVE_ENTRY_ACL_USER, 1000, "alice");
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 4, ARCHIVE_ENTRY_ACL_GROUP_OBJ, -1, nullptr);
        });
        w.add("d", S_IFDIR | 0755, {}, [](archive_entry* e) {
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, 7, ARCHIVE_ENTRY_ACL_USER_OBJ, -1, nullptr);
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, 5, ARCHIVE_ENTRY_ACL_USER, 1000, "alice");
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, 5, ARCHIVE_ENTRY_ACL_GROUP_OBJ, -1, nullptr);
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, 5, ARCHIVE_ENTRY_ACL_MASK, -1, nullptr);
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, 1, ARCHIVE_ENTRY_ACL_OTHER, -1, nullptr);
        });
        // As GNU tar --acls --xattrs writes it: the binary xattr, and a text ACL naming users
        // without ids.
        w.add("g", S_IFREG | 0664, {}, [&](archive_entry* e) {
            archive_entry_xattr_add_entry(e, "system.posix_acl_access", stored.data(), stored.size());
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 4, ARCHIVE_ENTRY_ACL_USER, -1, "carol");
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 4, ARCHIVE_ENTRY_ACL_GROUP_OBJ, -1, nullptr);
            archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 6, ARCHIVE_ENTRY_ACL_MASK, -1, nullptr);
        });
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tar, tree, sink, 0);

    const Inode& f = inodeAt(tree, "f");
    // With a mask, the mode's group bits are the mask's.
    CHECK(f.mode == (S_IFREG | 0674));
    CHECK(f.xattrs == std::vector<Xattr>{{"system.posix_acl_access",
                                          aclXattr({{0x01, 6, kNoId},
                                                    {0x02, 6, 1000},
                                                    {0x02, 6, 2000},
                                                    {0x04, 4, kNoId},
                                                    {0x08, 4, 50},
                                                    {0x10, 7, kNoId},
                                                    {0x20, 4, kNoId}})}});
    const Inode& d = inodeAt(tree, "d");
    CHECK(d.mode == (S_IFDIR | 0755));
    CHECK(d.xattrs == std::vector<Xattr>{{"system.posix_acl_default",
                                          aclXattr({{0x01, 7, kNoId},
                                                    {0x02, 5, 1000},
                                                    {0x04, 5, kNoId},
                                                    {0x10, 5, kNoId},
                                                    {0x20, 1, kNoId}})}});
    const Inode& g = inodeAt(tree, "g");
    CHECK(g.mode == (S_IFREG | 0664));
    CHECK(g.xattrs == std::vector<Xattr>{{"system.posix_acl_access", stored}});
}

TEST_CASE("tar: whiteouts, opaque directories and hardlinks across layers", "[tar]") {
    TempDir tmp;
    {
        TarWriter w(tmp / "0.tar");
        w.dir("d");
        w.file("d/x", "x0");
        w.file("d/y", "y0");
        w.dir("d/sub");
        w.file("d/sub/z", "z0");
        w.file("f", "f0");
        w.file("g", "g0");
        w.dir("o");
        w.file("o/p", "p0");
        w.dir("o/q");
        w.file("o/q/r", "r0");
        w.dir("o/keep");
        w.file("o/keep/old", "old");
        w.close();
    }
    {
        TarWriter w(tmp / "1.tar", ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, Filter::Gzip);
        w.file(".wh.f", "");
        w.file("d/.wh.x", "");
        w.file("./d/.wh.sub", "");
        w.file("o/new1", "n1");
        w.file("o/q/r2", "r2");
        w.file("o/.wh..wh..opq", "");
        w.file("o/keep/new2", "n2");
        w.hardlink("h", "g");
        w.file("s", "s1");
        w.file(".wh.s", "");  // same layer: s stays
        w.file(".wh.missing", "");
        w.file("e/.wh.nothing", "");
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tmp / "0.tar", tree, sink, 0);
    const Inode* g = &inodeAt(tree, "g");
    addTar(tmp / "1.tar", tree, sink, 1);

    CHECK(paths(tree) == std::vector<std::string>{"/", "/d", "/d/y", "/g", "/h", "/o", "/o/keep",
                                                  "/o/keep/new2", "/o/new1", "/o/q", "/o/q/r2", "/s"});
    CHECK(&inodeAt(tree, "h") == g);
    CHECK(&inodeAt(tree, "g") == g);
    CHECK(tree.find("h")->layer == 1);
    CHECK(tree.find("d/y")->layer == 0);
    // o/q stays as the parent of this layer's r2; o/keep was emptied and made anew.
    CHECK(tree.find("o/q")->layer == 0);
    CHECK(tree.find("o/keep")->layer == 1);
    CHECK(inodeAt(tree, "o/keep").mtime_sec == 0);
    // Every regular file was sent once, hardlinks and whiteouts not at all.
    std::vector<std::string> sent;
    for (const auto& file : sink.files) sent.push_back(file.content);
    CHECK(sent == std::vector<std::string>{"x0", "y0", "z0", "f0", "g0", "p0", "r0", "old", "n1",
                                           "r2", "n2", "s1"});
}

TEST_CASE("tar: symlinks among a member's parents are followed inside the image's root", "[tar]") {
    TempDir tmp;
    {
        TarWriter w(tmp / "0.tar");
        w.dir("usr");
        w.dir("usr/lib");
        w.file("usr/lib/old", "old");
        w.symlink("lib", "usr/lib");
        w.dir("a");
        w.file("a/x", "x");
        w.symlink("lnk", "a");
        w.symlink("abs", "/usr/lib");
        w.symlink("up", "../../usr");  // ".." stops at the root
        w.dir("d");
        w.symlink("d/back", "../a");
        w.symlink("chain", "lnk");
        w.close();
    }
    {
        TarWriter w(tmp / "1.tar");
        w.file("lib/.wh.old", "");
        w.file("lib/new", "new");
        w.file("lnk/.wh..wh..opq", "");
        w.file("abs/n2", "n2");
        w.file("up/lib/n3", "n3");
        w.file("d/back/y", "y");
        w.file("chain/z", "z");
        w.file("lib/sub/deep", "deep");  // a missing parent is made where the symlink leads
        w.hardlink("h", "lib/new");
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tmp / "0.tar", tree, sink, 0);
    addTar(tmp / "1.tar", tree, sink, 1);
    CHECK(paths(tree) == std::vector<std::string>{"/", "/a", "/a/y", "/a/z", "/abs", "/chain", "/d", "/d/back", "/h",
                                                  "/lib", "/lnk", "/up", "/usr", "/usr/lib", "/usr/lib/n2",
                                                  "/usr/lib/n3", "/usr/lib/new", "/usr/lib/sub", "/usr/lib/sub/deep"});
    CHECK(&inodeAt(tree, "h") == &inodeAt(tree, "usr/lib/new"));
    CHECK(inodeAt(tree, "lib").isLink());
}

// As containerd applies them (archive/tar.go: filepath.Clean, then fs.RootPath): an absolute
// member starts at the root, ".." takes the component before it away and stops at the root.
TEST_CASE("tar: absolute member paths and '..' land inside the root as a runtime puts them", "[tar]") {
    TempDir tmp;
    {
        TarWriter w(tmp / "0.tar");
        w.file("/etc/passwd", "root");
        w.file("a/../b", "b");
        w.file("../../escape", "e");
        w.file("/../../etc/../up", "up");
        w.hardlink("/h1", "../etc/passwd");
        w.hardlink("h2", "/etc/passwd");
        w.file(std::string(300, 'n') + "/../long", "l");  // too long a name only before cleaning
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tmp / "0.tar", tree, sink, 0);
    CHECK(paths(tree) ==
          std::vector<std::string>{"/", "/b", "/escape", "/etc", "/etc/passwd", "/h1", "/h2", "/long", "/up"});
    CHECK(&inodeAt(tree, "h1") == &inodeAt(tree, "etc/passwd"));
    CHECK(&inodeAt(tree, "h2") == &inodeAt(tree, "etc/passwd"));
}

TEST_CASE("tar: a whiteout of a name of 255 bytes", "[tar]") {
    TempDir tmp;
    const std::string name(255, 'n');
    {
        TarWriter w(tmp / "0.tar");
        w.file(name, "x");
        w.file("keep", "k");
        w.close();
    }
    {
        TarWriter w(tmp / "1.tar");
        w.file(".wh." + name, "");
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tmp / "0.tar", tree, sink, 0);
    addTar(tmp / "1.tar", tree, sink, 1);
    CHECK(paths(tree) == std::vector<std::string>{"/", "/keep"});
}

TEST_CASE("tar: a member replaced in its own layer stays alive for the sink", "[tar]") {
    TempDir tmp;
    {
        TarWriter w(tmp / "dup.tar");
        w.file("f", "one");
        w.file("f", "second");
        w.dir("d");
        w.file("d/g", "g");
        w.file("d", "no longer a directory");
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tmp / "dup.tar", tree, sink, 0);
    CHECK(paths(tree) == std::vector<std::string>{"/", "/d", "/f"});
    REQUIRE(sink.files.size() == 4);
    // The sink may fill chunks of the replaced inodes until it finishes.
    CHECK(sink.files[0].inode->size == 3);
    CHECK(sink.files[2].inode->size == 1);
    CHECK(&inodeAt(tree, "f") == sink.files[1].inode);
}

TEST_CASE("tar: the root entry replaces the root's metadata only", "[tar]") {
    TempDir tmp;
    {
        TarWriter w(tmp / "0.tar");
        w.file("a", "a");
        w.close();
    }
    {
        TarWriter w(tmp / "1.tar");
        w.add(".", S_IFDIR | 0700, {}, [](archive_entry* e) { archive_entry_set_gid(e, 9); });
        w.close();
    }
    FileTree tree;
    RecordingSink sink;
    addTar(tmp / "0.tar", tree, sink, 0);
    addTar(tmp / "1.tar", tree, sink, 1);
    CHECK(tree.root().inode->mode == (S_IFDIR | 0700));
    CHECK(tree.root().inode->gid == 9);
    CHECK(tree.find("a") != nullptr);
}

TEST_CASE("tar: sparse members over 4 GiB", "[tar]") {
    TempDir tmp;
    const uint64_t big = (5ull << 30) + 123;
    const std::string middle(4096, 'm');
    {
        TarWriter w(tmp / "sparse.tar");
        w.sparse("big", big, {{1 << 20, middle}, {5ull << 30, std::string(123, 'z')}});
        w.sparse("hole-at-end", 3 << 20, {{0, "head"}});
        w.close();
    }
    CHECK(std::filesystem::file_size(tmp / "sparse.tar") < (1 << 20));
    FileTree tree;
    RecordingSink sink;
    addTar(tmp / "sparse.tar", tree, sink, 0);
    REQUIRE(sink.files.size() == 2);
    CHECK(inodeAt(tree, "big").size == big);
    CHECK(sink.files[0].bytes_read == big);
    // Every piece but the two holding data: the one at 1 MiB and the 123-byte tail.
    CHECK(sink.files[0].holes_skipped == (5ull << 30) - RecordingSink::kPiece);
    CHECK(sink.files[0].non_zero == std::map<uint64_t, std::string>{{1 << 20, middle},
                                                                     {5ull << 30, std::string(123, 'z')}});
    CHECK(sink.files[1].bytes_read == 3 << 20);
    CHECK(sink.files[1].non_zero == std::map<uint64_t, std::string>{{0, "head"}});
    CHECK(sink.files[1].holes_skipped == 2 * RecordingSink::kPiece);
}

TEST_CASE("tar: GNU tar's old-style sparse members", "[tar]") {
    // libarchive cannot write them; GNU tar ('S' type flag with --format=gnu) can.
    if (std::system("tar --version >/dev/null 2>&1") != 0) {
        WARN("GNU tar not found; skipped");
        return;
    }
    TempDir tmp;
    const std::string file = tmp / "sp";
    {
        const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, 64 << 20) == 0);
        REQUIRE(::pwrite(fd, "data", 4, 8 << 20) == 4);
        ::close(fd);
    }
    const std::string command = "tar --sparse --format=gnu -C " + tmp.path().string() + " -cf " + (tmp / "gnu.tar") + " sp";
    REQUIRE(std::system(command.c_str()) == 0);
    CHECK(std::filesystem::file_size(tmp / "gnu.tar") < (1 << 20));
    FileTree tree;
    RecordingSink sink;
    addTar(tmp / "gnu.tar", tree, sink, 0);
    REQUIRE(sink.files.size() == 1);
    CHECK(sink.files[0].bytes_read == 64 << 20);
    CHECK(sink.files[0].non_zero == std::map<uint64_t, std::string>{{8 << 20, "data"}});
}

TEST_CASE("tar: empty input, stdin and trailing garbage", "[tar]") {
    TempDir tmp;
    FileTree tree;
    RecordingSink sink;

    writeFile(tmp / "empty.tar", "");
    addTar(tmp / "empty.tar", tree, sink, 0);
    CHECK(paths(tree) == std::vector<std::string>{"/"});

    {
        TarWriter w(tmp / "a.tar");
        w.file("a", "a");
        w.close();
    }
    writeFile(tmp / "garbage.tar", readFile(tmp / "a.tar") + std::string(3000, 'G'));
    addTar(tmp / "garbage.tar", tree, sink, 0);
    CHECK(tree.find("a") != nullptr);

    {
        TarWriter w(tmp / "b.tar", ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, Filter::Zstd);
        w.file("b", "b");
        w.close();
    }
    const int saved = ::dup(STDIN_FILENO);
    REQUIRE(saved >= 0);
    const int fd = ::open((tmp / "b.tar").c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::dup2(fd, STDIN_FILENO) == STDIN_FILENO);
    ::close(fd);
    try {
        addTar("-", tree, sink, 0);
    } catch (...) {
        ::dup2(saved, STDIN_FILENO);
        throw;
    }
    REQUIRE(::dup2(saved, STDIN_FILENO) == STDIN_FILENO);
    ::close(saved);
    CHECK(tree.find("b") != nullptr);
}

// One gzip member or zstd frame of `data` (compressible data: rafs::compress stores nothing it
// cannot shrink).
std::string compressed(rafs::Compressor compressor, std::string_view data) {
    std::vector<uint8_t> out;
    REQUIRE(rafs::compress(compressor, {reinterpret_cast<const uint8_t*>(data.data()), data.size()}, out));
    return {out.begin(), out.end()};
}
std::string gzipMember(std::string_view data) { return compressed(rafs::Compressor::Gzip, data); }

// A tar of "text" (lines, `size` bytes or a little more) and "small"; returns the tar and the text.
std::pair<std::string, std::string> textTar(TempDir& tmp, size_t size) {
    std::string text;
    for (int i = 0; text.size() < size; ++i) text += "line " + std::to_string(i) + "\n";
    {
        TarWriter w(tmp / "a.tar");
        w.file("text", text);
        w.file("small", "small");
        w.close();
    }
    return {readFile(tmp / "a.tar"), text};
}

TEST_CASE("tar: zstd frames with skippable frames among them, as zstd:chunked layers have", "[tar]") {
    TempDir tmp;
    const auto [tar, text] = textTar(tmp, 300 * 1024);
    auto frame = [](std::string_view data) { return compressed(rafs::Compressor::Zstd, data); };
    // Magic 0x184D2A5n, then the payload's size, little-endian.
    auto skippable = [](uint8_t n, const std::string& payload) {
        std::string out{static_cast<char>(0x50 | n), 0x2a, 0x4d, 0x18};
        for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(payload.size() >> (8 * i)));
        return out + payload;
    };
    const std::string frames = skippable(0, "lead") + frame(tar.substr(0, 100000)) + skippable(5, "between") +
                               frame(tar.substr(100000)) + skippable(0xf, std::string(3000, 'T')) +
                               skippable(0, std::string(64, 'F'));

    SECTION("read whole") {
        FileTree tree;
        RecordingSink sink;
        writeFile(tmp / "chunked.tar.zst", frames);
        addTar(tmp / "chunked.tar.zst", tree, sink, 0);
        REQUIRE(sink.files.size() == 2);
        CHECK(sink.files[0].content == text);
        CHECK(sink.files[1].content == "small");
    }
    SECTION("a skippable frame cut short") {
        FileTree tree;
        RecordingSink sink;
        writeFile(tmp / "cut.tar.zst", frames.substr(0, frames.size() - 10));
        CHECK_THROWS_WITH(addTar(tmp / "cut.tar.zst", tree, sink, 0), tmp / "cut.tar.zst" + ": truncated compressed stream");
    }
}

TEST_CASE("tar: gzip in several members, padded, and each member's trailer checked", "[tar]") {
    TempDir tmp;
    const auto [tar, text] = textTar(tmp, 700 * 1024);
    const std::string whole = gzipMember(tar);

    SECTION("members split inside a file, then zero padding") {
        FileTree tree;
        RecordingSink sink;
        writeFile(tmp / "split.tgz", gzipMember(tar.substr(0, 300000)) + gzipMember(tar.substr(300000, 5000)) +
                                         gzipMember(tar.substr(305000)) + std::string(4096, '\0'));
        addTar(tmp / "split.tgz", tree, sink, 0);
        REQUIRE(sink.files.size() == 2);
        CHECK(sink.files[0].content == text);
        CHECK(sink.files[1].content == "small");
    }
    SECTION("a wrong CRC-32 or length in the trailer, or garbage after it") {
        // The trailer is the member's last 8 bytes: CRC-32, then the length mod 2^32.
        for (const size_t from_end : {8u, 1u}) {
            FileTree tree;
            RecordingSink sink;
            std::string bad = whole;
            bad[bad.size() - from_end] ^= 0x01;
            writeFile(tmp / "bad.tgz", bad);
            CHECK_THROWS_WITH(addTar(tmp / "bad.tgz", tree, sink, 0),
                              tmp / "bad.tgz" + ": corrupt gzip data: CRC or length mismatch");
        }
        FileTree tree;
        RecordingSink sink;
        writeFile(tmp / "garbage.tgz", whole + "garbage");
        CHECK_THROWS_WITH(addTar(tmp / "garbage.tgz", tree, sink, 0),
                          tmp / "garbage.tgz" + ": unexpected data after the compressed stream");
    }
}

TEST_CASE("tar: rejected members", "[tar]") {
    TempDir tmp;
    const std::string tar = tmp / "bad.tar";
    FileTree tree;
    RecordingSink sink;
    auto expectError = [&](const std::function<void(TarWriter&)>& fill, const std::string& message) {
        {
            TarWriter w(tar);
            fill(w);
            w.close();
        }
        CHECK_THROWS_WITH(addTar(tar, tree, sink, 0), tar + ": " + message);
    };

    expectError([](TarWriter& w) { w.file("..", "x"); }, "member ..: the root entry is not a directory");
    expectError([](TarWriter& w) { w.hardlink("h", "missing"); },
                "member h: hardlink target missing does not exist");
    expectError(
        [](TarWriter& w) {
            w.dir("d");
            w.hardlink("h", "d");
        },
        "member h: hardlink target d is a directory");
    const std::string long_name = "d/" + std::string(256, 'n');
    expectError([&](TarWriter& w) { w.file(long_name, "x"); },
                "member " + long_name + ": path component longer than 255 bytes");
    expectError(
        [](TarWriter& w) {
            w.file("f", "x");
            w.file("f/g", "x");
        },
        "member f/g: parent /f is not a directory");
    expectError(
        [](TarWriter& w) {
            w.symlink("loop1", "loop2");
            w.symlink("loop2", "loop1");
            w.file("loop1/x", "x");
        },
        "member loop1/x: more than 40 symlinks in its path");
    std::string too_long;
    while (too_long.size() <= 4095) too_long += "a/";
    too_long += "f";
    expectError([&](TarWriter& w) { w.file(too_long, "x"); }, "member " + too_long + ": path longer than 4095 bytes");
    // Under 4095 bytes each, but 2040 + 20 directories deep through the symlink.
    std::string deep = "a";
    for (int i = 1; i < 2040; ++i) deep += "/a";
    std::string deeper = "s";
    for (int i = 0; i < 20; ++i) deeper += "/b";
    expectError(
        [&](TarWriter& w) {
            w.file(deep + "/f", "x");
            w.symlink("s", deep);
            w.file(deeper + "/f", "x");
        },
        "member " + deeper + "/f: deeper than 2048 directories");
    expectError([](TarWriter& w) { w.file(".", ""); }, "member .: the root entry is not a directory");
    expectError([](TarWriter& w) { w.symlink("s", std::string(4096, 't')); },
                "member s: symlink target of 4096 bytes (1 to 4095)");
    expectError(
        [](TarWriter& w) {
            w.add("dev", S_IFCHR | 0600, {}, [](archive_entry* e) {
                archive_entry_set_rdevmajor(e, 4096);
                archive_entry_set_rdevminor(e, 1);
            });
        },
        "member dev: device 4096:1 is not a Linux device number");
    expectError([](TarWriter& w) { w.file("d/.wh.", ""); }, "member d/.wh.: invalid whiteout name");
    expectError(
        [](TarWriter& w) {
            w.add("x", S_IFREG | 0644, {}, [](archive_entry* e) {
                archive_entry_xattr_add_entry(e, "system.nfs4_acl", "v", 1);
            });
        },
        "member x: xattr system.nfs4_acl: namespace not supported by RAFS v6");
    expectError(
        [](TarWriter& w) {
            w.add("fifo", S_IFIFO | 0644, {}, [](archive_entry* e) {
                archive_entry_xattr_add_entry(e, "trusted.ok", "v", 1);
                archive_entry_xattr_add_entry(e, "user.x", "v", 1);
            });
        },
        "member fifo: xattr user.x: user.* xattrs are allowed on regular files and directories only: Linux would "
        "list it but refuse to read it");
    expectError(
        [](TarWriter& w) {
            w.add("x", S_IFREG | 0644, {}, [](archive_entry* e) {
                archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ALLOW, ARCHIVE_ENTRY_ACL_READ_DATA,
                                            ARCHIVE_ENTRY_ACL_EVERYONE, -1, nullptr);
            });
        },
        "member x: NFSv4 ACLs are not supported by RAFS v6");
    expectError(
        [](TarWriter& w) {
            w.add("x", S_IFREG | 0644, {}, [](archive_entry* e) {
                archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 4, ARCHIVE_ENTRY_ACL_USER, -1, "nobody-known");
                archive_entry_acl_add_entry(e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, 4, ARCHIVE_ENTRY_ACL_MASK, -1, nullptr);
            });
        },
        "member x: ACL entry for nobody-known has no numeric id");
}

TEST_CASE("tar: unsupported entry type", "[tar]") {
    TempDir tmp;
    const std::string tar = tmp / "type.tar";
    // 'M' (a GNU multi-volume continuation) has no file type in libarchive.
    writeFile(tar, ustarHeader("cont", 'M') + std::string(1024, '\0'));
    FileTree tree;
    RecordingSink sink;
    CHECK_THROWS_WITH(addTar(tar, tree, sink, 0), tar + ": member cont: unsupported entry type 0");
}

TEST_CASE("tar: truncated, corrupt and missing archives", "[tar]") {
    TempDir tmp;
    const std::string data = randomBytes(1 << 20);
    FileTree tree;
    RecordingSink sink;

    SECTION("truncated tar") {
        {
            TarWriter w(tmp / "full.tar");
            w.file("big", data);
            w.close();
        }
        writeFile(tmp / "cut.tar", readFile(tmp / "full.tar").substr(0, 600 * 1024));
        CHECK_THROWS_WITH(addTar(tmp / "cut.tar", tree, sink, 0),
                          StartsWith(tmp / "cut.tar" + ": member big: ") && Contains("Truncated tar archive"));
    }
    SECTION("truncated header") {
        {
            TarWriter w(tmp / "full.tar");
            w.file("a", "a");
            w.file("b", "b");
            w.close();
        }
        writeFile(tmp / "cut.tar", readFile(tmp / "full.tar").substr(0, 2 * 512 + 100));
        CHECK_THROWS_WITH(addTar(tmp / "cut.tar", tree, sink, 0),
                          StartsWith(tmp / "cut.tar" + ": after member a: ") && Contains("runcated"));
    }
    SECTION("a malformed pax record") {
        // libarchive skips it with a warning, and the member would keep its truncated ustar name.
        const std::string name = "dir/" + std::string(120, 'n');
        {
            TarWriter w(tmp / "pax.tar");
            w.file(name, "x");
            w.close();
        }
        std::string bytes = readFile(tmp / "pax.tar");
        const size_t record = bytes.find(" path=");
        REQUIRE(record != std::string::npos);
        REQUIRE(bytes[record - 3] == '1');  // a three-digit length
        bytes[record - 3] = '9';
        writeFile(tmp / "bad.tar", bytes);
        CHECK_THROWS_WITH(addTar(tmp / "bad.tar", tree, sink, 0),
                          StartsWith(tmp / "bad.tar" + ": ") && Contains("malformed pax"));
    }
    SECTION("a damaged header") {
        {
            TarWriter w(tmp / "full.tar", ARCHIVE_FORMAT_TAR_USTAR);
            w.file("a", "a");
            w.file("b", "b");
            w.close();
        }
        std::string bytes = readFile(tmp / "full.tar");
        bytes[2 * 512 + 148] = '7';  // b's header checksum
        writeFile(tmp / "bad.tar", bytes);
        CHECK_THROWS_WITH(addTar(tmp / "bad.tar", tree, sink, 0),
                          tmp / "bad.tar" + ": after member a: Damaged tar archive");
    }
    SECTION("truncated gzip") {
        {
            TarWriter w(tmp / "full.tgz", ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, Filter::Gzip);
            w.file("big", data);
            w.close();
        }
        writeFile(tmp / "cut.tgz", readFile(tmp / "full.tgz").substr(0, 600 * 1024));
        CHECK_THROWS_WITH(addTar(tmp / "cut.tgz", tree, sink, 0),
                          StartsWith(tmp / "cut.tgz" + ": ") && Contains("truncated"));
    }
    SECTION("corrupt gzip") {
        {
            TarWriter w(tmp / "full.tgz", ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, Filter::Gzip);
            w.file("big", data);
            w.close();
        }
        // The first deflate block's header; libarchive does not check gzip's CRC, so damage
        // inside the data may go unnoticed.
        std::string bytes = readFile(tmp / "full.tgz");
        for (size_t i = 10; i < 40; ++i) bytes[i] = '\xff';
        writeFile(tmp / "bad.tgz", bytes);
        CHECK_THROWS_WITH(addTar(tmp / "bad.tgz", tree, sink, 0),
                          StartsWith(tmp / "bad.tgz" + ": corrupt gzip data"));
    }
    SECTION("not an archive") {
        writeFile(tmp / "junk", randomBytes(10000));
        CHECK_THROWS_WITH(addTar(tmp / "junk", tree, sink, 0),
                          tmp / "junk" + ": Unrecognized archive format");
    }
    SECTION("missing file") {
        CHECK_THROWS_WITH(addTar(tmp / "none.tar", tree, sink, 0),
                          Contains(tmp / "none.tar") && Contains("No such file or directory"));
    }
}

TEST_CASE("tar: nydus all-entry-type fixture", "[tar]") {
    const std::string fixture = "../../../shared/fixtures/nydus/all-entry-type.tar";
    if (!std::filesystem::exists(fixture)) {
        WARN("fixture " << fixture << " not found; skipped");
        return;
    }
    FileTree tree;
    RecordingSink sink;
    addTar(fixture, tree, sink, 0);
    CHECK(paths(tree) == std::vector<std::string>{
                             "/", "/tar", "/tar/dir1", "/tar/dir1/dir3", "/tar/dir1/dir3/hardlink1.txt",
                             "/tar/dir1/dir3/xfile.txt", "/tar/dir1/hardlink2.txt", "/tar/dir2",
                             "/tar/dir2/hardlink3.txt", "/tar/dir2/symlink1.txt"});
    const Inode& file = inodeAt(tree, "tar/dir1/dir3/hardlink1.txt");
    CHECK(&inodeAt(tree, "tar/dir1/dir3/xfile.txt") == &file);
    CHECK(&inodeAt(tree, "tar/dir1/hardlink2.txt") == &file);
    CHECK(&inodeAt(tree, "tar/dir2/hardlink3.txt") == &file);
    CHECK(file.mode == (S_IFREG | 0644));
    CHECK(file.mtime_sec == 1665584430);
    CHECK(inodeAt(tree, "tar").mtime_sec == 1665585322);
    CHECK(inodeAt(tree, "tar/dir2/symlink1.txt").symlink_target == "../dir1/dir3/file1.txt");
    REQUIRE(sink.files.size() == 1);
    CHECK(sink.files[0].content == "This is a test\n");
}

// Nydus reads no rdev from a compact inode, so device nodes are extended ones, whatever their mtime.
TEST_CASE("tar: device nodes become extended inodes with their rdev", "[tar]") {
    struct Device {
        const char* name;
        mode_t type;
        unsigned major, minor;
    };
    const Device devices[] = {{"dev/null", S_IFCHR, 1, 3}, {"dev/sda", S_IFBLK, 8, 0}};
    TempDir tmp;
    const std::string tar = tmp / "dev.tar";
    {
        TarWriter w(tar);
        w.dir("dev");
        for (const auto& [name, type, major, minor] : devices) {
            w.add(name, type | 0666u, {}, [major = major, minor = minor](archive_entry* e) {
                archive_entry_set_rdevmajor(e, static_cast<dev_t>(major));
                archive_entry_set_rdevminor(e, static_cast<dev_t>(minor));
            });
        }
        w.file("file", "x");
        w.close();
    }
    BuildOptions options;
    options.output = tmp / "img";
    options.sources = {tar};
    options.mtime = 1000;  // one mtime for all: every inode that can be compact is
    options.threads = 1;
    std::ostringstream log;
    build(options, log);
    const rafs::Bootstrap b(tmp / "img/image.boot");
    for (const auto& [name, type, major, minor] : devices) {
        const rafs::Inode dev = b.inode(b.lookup(std::string("/") + name).value());
        CHECK(dev.extended);
        CHECK((erofs::devMajor(dev.rdev) == major && erofs::devMinor(dev.rdev) == minor));
    }
    CHECK_FALSE(b.inode(b.lookup("/file").value()).extended);
}
