#include "format/Error.h"
#include "builder/source/DirectorySource.h"
#include "tests/unit/SourceTestUtil.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

using namespace rafs::build;
using rafs::build::test::RecordingSink;
using rafs::build::test::TempDir;

namespace {

void writeFile(const std::string& path, const std::string& data, mode_t mode = 0644) {
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(data.data(), static_cast<std::streamsize>(data.size()));
        REQUIRE(out.good());
    }
    REQUIRE(::chmod(path.c_str(), mode) == 0);
}

void setMtime(const std::string& path, time_t sec, long nsec) {
    const timespec times[2] = {{sec, nsec}, {sec, nsec}};
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0);
}

void setXattr(const std::string& path, const std::string& name, const std::string& value) {
    INFO(path << " " << name);
    REQUIRE(::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0) == 0);
}

void run(const std::string& command) {
    INFO(command);
    REQUIRE(std::system(command.c_str()) == 0);
}

void makeSocket(const std::string& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    path.copy(addr.sun_path, path.size());
    const int bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    ::close(fd);
    REQUIRE(bound == 0);
}

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

std::string xattrValue(const Inode& inode, const std::string& name) {
    for (const auto& [n, v] : inode.xattrs) {
        if (n == name) return v;
    }
    FAIL("no xattr " << name);
    return {};
}

}  // namespace

TEST_CASE("directory: every file type with its metadata", "[dirsource]") {
    if (::geteuid() != 0) {
        WARN("needs root for mknod, chown and trusted.* xattrs; skipped");
        return;
    }
    TempDir tmp;
    const std::string root = tmp / "root";
    REQUIRE(::mkdir(root.c_str(), 0750) == 0);
    auto at = [&](const std::string& name) { return root + "/" + name; };

    writeFile(at("a.txt"), "hello", 04755);
    REQUIRE(::lchown(at("a.txt").c_str(), 1234, 5678) == 0);
    REQUIRE(::chmod(at("a.txt").c_str(), 04755) == 0);  // chown cleared setuid
    setXattr(at("a.txt"), "user.zz", "last");
    setXattr(at("a.txt"), "user.aa", "first");
    setXattr(at("a.txt"), "trusted.t", std::string("\0\1", 2));
    const std::string cap("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
    setXattr(at("a.txt"), "security.capability", cap);
    setMtime(at("a.txt"), 1600000000, 987654321);

    // 5 GiB, mostly hole.
    {
        const int fd = ::open(at("sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, 5ll << 30) == 0);
        REQUIRE(::pwrite(fd, "middle", 6, (1ll << 30) + 3) == 6);
        REQUIRE(::pwrite(fd, "end", 3, (5ll << 30) - 3) == 3);
        ::close(fd);
    }
    REQUIRE(::mkdir(at("dir").c_str(), 02755) == 0);
    REQUIRE(::chmod(at("dir").c_str(), 02755) == 0);
    REQUIRE(::mkdir(at("dir/sticky").c_str(), 01777) == 0);
    REQUIRE(::chmod(at("dir/sticky").c_str(), 01777) == 0);
    writeFile(at("dir/nested.txt"), "nested");
    REQUIRE(::link(at("a.txt").c_str(), at("dir/hard.txt").c_str()) == 0);
    REQUIRE(::symlink("../a.txt", at("dir/link").c_str()) == 0);
    setMtime(at("dir/link"), 1500000000, 5);
    REQUIRE(::mknod(at("null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
    REQUIRE(::chmod(at("null").c_str(), 0666) == 0);  // past the umask
    REQUIRE(::link(at("null").c_str(), at("null2").c_str()) == 0);
    REQUIRE(::mknod(at("blk").c_str(), S_IFBLK | 0660, makedev(259, 70000)) == 0);
    REQUIRE(::chmod(at("blk").c_str(), 0660) == 0);
    REQUIRE(::mkfifo(at("fifo").c_str(), 0640) == 0);
    REQUIRE(::chmod(at("fifo").c_str(), 0640) == 0);
    REQUIRE(::link(at("fifo").c_str(), at("fifo2").c_str()) == 0);
    makeSocket(at("sock"));
    writeFile(at("empty"), "");
    writeFile(at("acl.txt"), "acl");
    run("setfacl -m u:1000:rw,g:50:r " + at("acl.txt"));
    run("setfacl -d -m u:1000:rx " + at("dir"));
    setMtime(root, 1700000000, 42);

    FileTree tree;
    RecordingSink sink;
    addDirectory(root, tree, sink, 3);

    CHECK(paths(tree) == std::vector<std::string>{"/", "/a.txt", "/acl.txt", "/blk", "/dir",
                                                  "/dir/hard.txt", "/dir/link", "/dir/nested.txt",
                                                  "/dir/sticky", "/empty", "/fifo", "/fifo2", "/null",
                                                  "/null2", "/sock", "/sparse"});
    tree.walk([](Node& node, const std::string& path) {
        INFO(path);
        CHECK(node.layer == 3);
    });

    const Inode& r = inodeAt(tree, "/");
    CHECK(r.mode == (S_IFDIR | 0750));
    CHECK(r.mtime_sec == 1700000000);
    CHECK(r.mtime_nsec == 42);

    const Inode& a = inodeAt(tree, "a.txt");
    CHECK(a.mode == (S_IFREG | 04755));
    CHECK(a.uid == 1234);
    CHECK(a.gid == 5678);
    CHECK(a.size == 5);
    CHECK(a.mtime_sec == 1600000000);
    CHECK(a.mtime_nsec == 987654321);
    CHECK(a.xattrs == std::vector<Xattr>{{"security.capability", cap},
                                         {"trusted.t", std::string("\0\1", 2)},
                                         {"user.aa", "first"},
                                         {"user.zz", "last"}});
    CHECK(&inodeAt(tree, "dir/hard.txt") == &a);

    const Inode& acl = inodeAt(tree, "acl.txt");
    std::string value = xattrValue(acl, "system.posix_acl_access");
    CHECK(value.size() == 4 + 6 * 8);  // user::, user:1000, group::, group:50, mask::, other::
    CHECK(value.substr(0, 4) == std::string("\x02\0\0\0", 4));
    CHECK(xattrValue(inodeAt(tree, "dir"), "system.posix_acl_default").size() == 4 + 5 * 8);
    CHECK(inodeAt(tree, "dir").mode == (S_IFDIR | 02755));
    CHECK(inodeAt(tree, "dir/sticky").mode == (S_IFDIR | 01777));

    const Inode& link = inodeAt(tree, "dir/link");
    CHECK(link.mode == (S_IFLNK | 0777));
    CHECK(link.symlink_target == "../a.txt");
    CHECK(link.size == 8);
    CHECK(link.mtime_sec == 1500000000);
    CHECK(link.mtime_nsec == 5);

    const Inode& null = inodeAt(tree, "null");
    CHECK(null.mode == (S_IFCHR | 0666));
    CHECK(null.rdev_major == 1);
    CHECK(null.rdev_minor == 3);
    CHECK(&inodeAt(tree, "null2") == &null);
    const Inode& blk = inodeAt(tree, "blk");
    CHECK(blk.mode == (S_IFBLK | 0660));
    CHECK(blk.rdev_major == 259);
    CHECK(blk.rdev_minor == 70000);
    CHECK(inodeAt(tree, "fifo").mode == (S_IFIFO | 0640));
    CHECK(&inodeAt(tree, "fifo2") == &inodeAt(tree, "fifo"));
    CHECK(S_ISSOCK(inodeAt(tree, "sock").mode));

    // Regular files in walk order, each once.
    REQUIRE(sink.files.size() == 5);
    CHECK(sink.files[0].inode == &a);
    CHECK(sink.files[0].content == "hello");
    CHECK(sink.files[1].inode == &acl);
    CHECK(sink.files[1].content == "acl");
    CHECK(sink.files[2].content == "nested");
    CHECK(sink.files[3].inode == &inodeAt(tree, "empty"));
    CHECK(sink.files[3].bytes_read == 0);
    const auto& sparse = sink.files[4];
    CHECK(sparse.inode == &inodeAt(tree, "sparse"));
    CHECK(sparse.bytes_read == 5ull << 30);
    // All but the two data pieces, where the file system tells holes (SEEK_DATA); one that does not
    // (9p, ZFS before a sync) says the whole file is data, and nothing is skipped.
    const int fd = ::open(at("sparse").c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const bool holes_told = ::lseek(fd, 0, SEEK_DATA) > 0;
    ::close(fd);
    CHECK(sparse.holes_skipped == (holes_told ? (5ull << 30) - 2 * RecordingSink::kPiece : 0));
    CHECK(sparse.non_zero == std::map<uint64_t, std::string>{{(1ull << 30) + 3, "middle"},
                                                              {(5ull << 30) - 3, "end"}});
}

TEST_CASE("directory: a later layer merges into the tree", "[dirsource]") {
    TempDir tmp;
    REQUIRE(::mkdir((tmp / "one").c_str(), 0755) == 0);
    REQUIRE(::mkdir((tmp / "one/d").c_str(), 0755) == 0);
    writeFile(tmp / "one/d/a", "a1");
    writeFile(tmp / "one/f", "f1");
    REQUIRE(::mkdir((tmp / "two").c_str(), 0700) == 0);
    REQUIRE(::mkdir((tmp / "two/d").c_str(), 0755) == 0);
    writeFile(tmp / "two/d/b", "b2");
    REQUIRE(::mkdir((tmp / "two/f").c_str(), 0755) == 0);

    FileTree tree;
    RecordingSink sink;
    addDirectory(tmp / "one", tree, sink, 0);
    addDirectory(tmp / "two/", tree, sink, 1);
    CHECK(paths(tree) == std::vector<std::string>{"/", "/d", "/d/a", "/d/b", "/f"});
    CHECK(tree.root().inode->mode == (S_IFDIR | 0700));
    CHECK(inodeAt(tree, "f").isDir());
    CHECK(tree.find("d/a")->layer == 0);
    CHECK(tree.find("d/b")->layer == 1);
}

// `mkrafs build --output out .`: the output dir holds the build's staging files while the walk
// runs, and would otherwise be packed into the image.
TEST_CASE("directory: the build's output dir under the source is left out", "[dirsource]") {
    TempDir tmp;
    for (const char* dir : {"src", "src/d", "src/d/out", "src/d/out/.mkrafs-staging", "src/out"}) {
        REQUIRE(::mkdir((tmp / dir).c_str(), 0755) == 0);
    }
    writeFile(tmp / "src/d/out/.mkrafs-staging/blob.tmp", "staged");
    writeFile(tmp / "src/out/kept", "k");

    FileTree tree;
    RecordingSink sink;
    addDirectory(tmp / "src", tree, sink, 0, tmp / "src/d/out/");
    CHECK(paths(tree) == std::vector<std::string>{"/", "/d", "/out", "/out/kept"});
    REQUIRE(sink.files.size() == 1);
    CHECK(sink.files[0].content == "k");
}

// A directory layer is an unpacked layer: its OCI whiteouts apply as a tar layer's do (TarSource),
// and are not entries of the image.
TEST_CASE("directory: whiteouts and opaque directories of a later layer", "[dirsource]") {
    TempDir tmp;
    for (const char* dir : {"one", "one/d", "one/d/sub", "one/o", "one/o/q", "two", "two/d", "two/d/sub-new",
                            "two/o", "two/o/q", "two/.wh.gone-dir"}) {
        REQUIRE(::mkdir((tmp / dir).c_str(), 0755) == 0);
    }
    writeFile(tmp / "one/d/x", "x0");
    writeFile(tmp / "one/d/y", "y0");
    writeFile(tmp / "one/d/sub/z", "z0");
    writeFile(tmp / "one/f", "f0");
    writeFile(tmp / "one/o/p", "p0");
    writeFile(tmp / "one/o/q/r", "r0");
    writeFile(tmp / "two/.wh.f", "");
    writeFile(tmp / "two/d/.wh.x", "");
    writeFile(tmp / "two/d/.wh.sub", "");
    writeFile(tmp / "two/o/-first", "n0");  // sorts before the opaque marker: stays
    writeFile(tmp / "two/o/.wh..wh..opq", "");
    writeFile(tmp / "two/o/new", "n1");
    writeFile(tmp / "two/o/q/r2", "r2");
    writeFile(tmp / "two/s", "s1");
    writeFile(tmp / "two/.wh.s", "");  // same layer: s stays
    writeFile(tmp / "two/.wh.gone-dir/inside", "hidden");

    FileTree tree;
    RecordingSink sink;
    addDirectory(tmp / "one", tree, sink, 0);
    addDirectory(tmp / "two", tree, sink, 1);
    CHECK(paths(tree) == std::vector<std::string>{"/", "/d", "/d/sub-new", "/d/y", "/o", "/o/-first", "/o/new",
                                                  "/o/q", "/o/q/r2", "/s"});
    CHECK(tree.find("o/q")->layer == 1);
    std::vector<std::string> sent;
    for (const auto& file : sink.files) sent.push_back(file.content);
    CHECK(sent == std::vector<std::string>{"z0", "x0", "y0", "f0", "p0", "r0", "n0", "n1", "r2", "s1"});

    REQUIRE(::mkdir((tmp / "bad").c_str(), 0755) == 0);
    writeFile(tmp / "bad/.wh.", "");
    CHECK_THROWS_WITH(addDirectory(tmp / "bad", tree, sink, 2),
                      Catch::Matchers::Contains("bad/.wh.: invalid whiteout name"));
}

TEST_CASE("directory: files that change under the reader", "[dirsource]") {
    TempDir tmp;
    const std::string root = tmp / "root";
    REQUIRE(::mkdir(root.c_str(), 0755) == 0);
    const std::string victim = root + "/victim";
    writeFile(victim, std::string(3 << 20, 'v'));
    FileTree tree;
    RecordingSink sink;

    SECTION("removed") {
        sink.before_read = [&](const Inode&) { REQUIRE(::unlink(victim.c_str()) == 0); };
        CHECK_THROWS_WITH(addDirectory(root, tree, sink, 0),
                          "cannot open " + victim + ": No such file or directory");
    }
    SECTION("replaced by a directory") {
        sink.before_read = [&](const Inode&) {
            REQUIRE(::unlink(victim.c_str()) == 0);
            REQUIRE(::mkdir(victim.c_str(), 0755) == 0);
        };
        CHECK_THROWS_WITH(addDirectory(root, tree, sink, 0),
                          victim + ": replaced by another file while reading");
    }
    SECTION("replaced by a symlink") {
        sink.before_read = [&](const Inode&) {
            REQUIRE(::unlink(victim.c_str()) == 0);
            REQUIRE(::symlink("/etc/passwd", victim.c_str()) == 0);
        };
        CHECK_THROWS_WITH(addDirectory(root, tree, sink, 0),
                          "cannot open " + victim + ": Too many levels of symbolic links");
    }
    SECTION("shrunk") {
        sink.before_read = [&](const Inode&) { REQUIRE(::truncate(victim.c_str(), 1 << 20) == 0); };
        CHECK_THROWS_WITH(addDirectory(root, tree, sink, 0), victim + ": file shrank while reading");
    }
    SECTION("emptied") {
        sink.before_read = [&](const Inode&) { REQUIRE(::truncate(victim.c_str(), 0) == 0); };
        CHECK_THROWS_WITH(addDirectory(root, tree, sink, 0), victim + ": file shrank while reading");
    }
    SECTION("grown") {
        sink.before_read = [&](const Inode&) { REQUIRE(::truncate(victim.c_str(), 4 << 20) == 0); };
        CHECK_THROWS_WITH(addDirectory(root, tree, sink, 0), victim + ": file grew while reading");
    }
}

TEST_CASE("directory: bad roots", "[dirsource]") {
    TempDir tmp;
    FileTree tree;
    RecordingSink sink;
    CHECK_THROWS_WITH(addDirectory(tmp / "none", tree, sink, 0),
                      "cannot stat " + tmp / "none" + ": No such file or directory");
    writeFile(tmp / "file", "x");
    CHECK_THROWS_WITH(addDirectory(tmp / "file", tree, sink, 0), tmp / "file" + ": not a directory");
    REQUIRE(::symlink(tmp.path().c_str(), (tmp / "link").c_str()) == 0);
    CHECK_THROWS_WITH(addDirectory(tmp / "link", tree, sink, 0), tmp / "link" + ": not a directory");
}

TEST_CASE("directory: an entry that vanishes during the walk", "[dirsource]") {
    TempDir tmp;
    const std::string root = tmp / "root";
    REQUIRE(::mkdir(root.c_str(), 0755) == 0);
    REQUIRE(::mkdir((root + "/sub").c_str(), 0755) == 0);
    FileTree tree;
    RecordingSink sink;
    // "sub" is removed while "a" is read, before the walk reaches it.
    writeFile(root + "/a", "a");
    sink.before_read = [&](const Inode&) { REQUIRE(::rmdir((root + "/sub").c_str()) == 0); };
    CHECK_THROWS_WITH(addDirectory(root, tree, sink, 0),
                      "cannot stat " + root + "/sub: No such file or directory");
}
