#include "format/Error.h"
#include "builder/tree/FileTree.h"

#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <string>
#include <vector>

using namespace rafs::build;

namespace {

std::shared_ptr<Inode> makeInode(mode_t mode, uint32_t uid = 0) {
    auto inode = std::make_shared<Inode>();
    inode->mode = mode;
    inode->uid = uid;
    return inode;
}

std::vector<std::string> paths(FileTree& tree) {
    std::vector<std::string> out;
    tree.walk([&](Node&, const std::string& path) { out.push_back(path); });
    return out;
}

}  // namespace

TEST_CASE("a new tree has a 0755 root directory", "[tree]") {
    FileTree tree;
    REQUIRE(tree.root().inode);
    CHECK(tree.root().inode->mode == (S_IFDIR | 0755));
    CHECK(tree.root().name.empty());
    CHECK(tree.root().parent == nullptr);
    CHECK(tree.find("/") == &tree.root());
    CHECK(tree.find("") == &tree.root());
    CHECK(tree.find(".") == &tree.root());
    CHECK(tree.find("./") == &tree.root());
    CHECK(paths(tree) == std::vector<std::string>{"/"});
}

TEST_CASE("put and find normalize paths", "[tree]") {
    FileTree tree;
    Node& a = tree.put("a", makeInode(S_IFDIR | 0700), 0);
    Node& b = tree.put("/a//b", makeInode(S_IFREG | 0644), 1);
    CHECK(a.name == "a");
    CHECK(a.parent == &tree.root());
    CHECK(b.name == "b");
    CHECK(b.parent == &a);
    CHECK(b.layer == 1);
    CHECK(tree.find("a/b") == &b);
    CHECK(tree.find("./a/b") == &b);
    CHECK(tree.find("/a/b/") == &b);
    CHECK(tree.find("a/c") == nullptr);
    CHECK(tree.find("a/b/c") == nullptr);  // below a file
    CHECK_THROWS_WITH(tree.find("a/../b"), "path a/../b: '..' component not allowed");
    CHECK_THROWS_WITH(tree.find("a/./b"), "path a/./b: '.' component not allowed");
    CHECK_THROWS_AS(tree.put("..", makeInode(S_IFDIR), 0), rafs::Error);
}

TEST_CASE("put needs an existing parent directory", "[tree]") {
    FileTree tree;
    CHECK_THROWS_WITH(tree.put("x/y", makeInode(S_IFREG), 0), "path x/y: parent /x does not exist");
    tree.put("f", makeInode(S_IFREG), 0);
    CHECK_THROWS_WITH(tree.put("f/y", makeInode(S_IFREG), 0), "path f/y: parent /f is not a directory");
    CHECK_THROWS_WITH(tree.put("/", makeInode(S_IFREG), 0),
                      "path /: the root can only be replaced by a directory");
}

TEST_CASE("replacing entries", "[tree]") {
    FileTree tree;
    tree.put("d", makeInode(S_IFDIR | 0755), 0);
    tree.put("d/f", makeInode(S_IFREG | 0644), 0);
    tree.put("d/sub", makeInode(S_IFDIR | 0755), 0);
    tree.put("d/sub/g", makeInode(S_IFREG | 0644), 0);

    SECTION("a directory over a directory keeps the children") {
        auto inode = makeInode(S_IFDIR | 0700, 42);
        Node& d = tree.put("d", inode, 1);
        CHECK(d.inode == inode);
        CHECK(d.layer == 1);
        CHECK(d.children.size() == 2);
        CHECK(tree.find("d/sub/g") != nullptr);
        CHECK(tree.find("d/f")->layer == 0);
    }
    SECTION("a file over a directory drops the subtree") {
        Node& d = tree.put("d", makeInode(S_IFREG | 0644), 1);
        CHECK(d.children.empty());
        CHECK(tree.find("d/f") == nullptr);
        CHECK(paths(tree) == std::vector<std::string>{"/", "/d"});
    }
    SECTION("a directory over a file starts empty") {
        Node& f = tree.put("d/f", makeInode(S_IFDIR | 0755), 1);
        CHECK(f.inode->isDir());
        CHECK(f.children.empty());
    }
    SECTION("the root keeps its children") {
        auto inode = makeInode(S_IFDIR | 0711, 7);
        Node& root = tree.put("/", inode, 3);
        CHECK(&root == &tree.root());
        CHECK(root.inode == inode);
        CHECK(root.layer == 3);
        CHECK(tree.find("d/sub/g") != nullptr);
    }
}

TEST_CASE("remove drops the subtree", "[tree]") {
    FileTree tree;
    tree.put("d", makeInode(S_IFDIR | 0755), 0);
    tree.put("d/f", makeInode(S_IFREG | 0644), 0);
    tree.put("e", makeInode(S_IFREG | 0644), 0);
    CHECK(tree.remove("d"));
    CHECK_FALSE(tree.remove("d"));
    CHECK_FALSE(tree.remove("d/f"));
    CHECK_FALSE(tree.remove("nothing/here"));
    CHECK(paths(tree) == std::vector<std::string>{"/", "/e"});
    CHECK_THROWS_WITH(tree.remove("/"), "path /: the root cannot be removed");
}

// OCI image-spec layer.md: whiteouts apply to lower layers only, so where in its layer a
// whiteout comes (a sorted directory layer puts ".cache" before ".wh..cache") changes nothing.
TEST_CASE("a whiteout after its layer's own entries hides only the lower layers' ones", "[tree]") {
    FileTree tree;
    for (const char* dir : {"a", "b", "c"}) {
        tree.put(dir, makeInode(S_IFDIR | 0755), 0);
        tree.put(std::string(dir) + "/old", makeInode(S_IFREG | 0644), 0);
    }
    tree.put("c/sub", makeInode(S_IFDIR | 0755), 0);
    tree.put("c/sub/deep-old", makeInode(S_IFREG | 0644), 0);
    tree.put("f", makeInode(S_IFREG | 0644), 0);
    // a: made again in layer 1, with a new file, then whited out.
    tree.put("a", makeInode(S_IFDIR | 0700), 1);
    tree.put("a/new", makeInode(S_IFREG | 0644), 1);
    CHECK(tree.applyWhiteout(&tree.root(), ".wh.a", 1));
    // b: only a new file in it, then whited out: b stays as its parent.
    tree.put("b/new", makeInode(S_IFREG | 0644), 1);
    CHECK(tree.applyWhiteout(&tree.root(), ".wh.b", 1));
    // c: a new file two levels down.
    tree.put("c/sub/deep-new", makeInode(S_IFREG | 0644), 1);
    CHECK(tree.applyWhiteout(&tree.root(), ".wh.c", 1));
    // f: replaced in layer 1, then whited out: layer 1's f stays.
    tree.put("f", makeInode(S_IFREG | 0600), 1);
    CHECK(tree.applyWhiteout(&tree.root(), ".wh.f", 1));
    CHECK(paths(tree) == std::vector<std::string>{"/", "/a", "/a/new", "/b", "/b/new", "/c", "/c/sub",
                                                  "/c/sub/deep-new", "/f"});
    CHECK(tree.find("a")->inode->mode == (S_IFDIR | 0700));
    CHECK(tree.find("f")->layer == 1);
    // The lower layer's entries alone are hidden whole.
    tree.put("g", makeInode(S_IFDIR | 0755), 1);
    tree.put("g/x", makeInode(S_IFREG | 0644), 1);
    CHECK(tree.applyWhiteout(&tree.root(), ".wh.g", 2));
    CHECK(tree.find("g") == nullptr);
}

TEST_CASE("walk visits parents first and names in bytewise order", "[tree]") {
    FileTree tree;
    for (const char* name : {"b", "a.b", "\xc3\xa9", "B", "a-b", "a"}) {
        tree.put(name, makeInode(S_IFDIR | 0755), 0);
    }
    tree.put("a/z", makeInode(S_IFREG | 0644), 0);
    tree.put("a/y", makeInode(S_IFREG | 0644), 0);
    CHECK(paths(tree) == std::vector<std::string>{"/", "/B", "/a", "/a/y", "/a/z", "/a-b", "/a.b",
                                                  "/b", "/\xc3\xa9"});
}

TEST_CASE("hardlinks are entries sharing one inode", "[tree]") {
    FileTree tree;
    auto inode = makeInode(S_IFREG | 0644);
    tree.put("x", inode, 0);
    tree.put("y", inode, 1);
    CHECK(tree.find("x")->inode.get() == tree.find("y")->inode.get());
    tree.remove("x");
    CHECK(tree.find("y")->inode == inode);
}

TEST_CASE("setXattr keeps names sorted and unique", "[tree]") {
    Inode inode;
    inode.setXattr("user.b", "1");
    inode.setXattr("security.capability", "cap");
    inode.setXattr("user.a", "2");
    inode.setXattr("user.b", "3");
    inode.setXattr("trusted.x", "");
    CHECK(inode.xattrs == std::vector<Xattr>{{"security.capability", "cap"},
                                             {"trusted.x", ""},
                                             {"user.a", "2"},
                                             {"user.b", "3"}});
}

TEST_CASE("xattrProblem accepts what RAFS v6 stores", "[tree]") {
    CHECK(xattrProblem("user.foo", 0).empty());
    CHECK(xattrProblem("trusted.overlay.opaque", 1).empty());
    CHECK(xattrProblem("security.capability", 20).empty());
    CHECK(xattrProblem("system.posix_acl_access", 28).empty());
    CHECK(xattrProblem("system.posix_acl_default", 28).empty());
    CHECK(xattrProblem("user." + std::string(250, 'n'), 65535).empty());

    CHECK(xattrProblem("system.nfs4_acl", 1) == "namespace not supported by RAFS v6");
    CHECK(xattrProblem("system.posix_acl_access2", 1) == "namespace not supported by RAFS v6");
    CHECK(xattrProblem("lustre.x", 1) == "namespace not supported by RAFS v6");
    CHECK(xattrProblem("user", 1) == "namespace not supported by RAFS v6");
    CHECK(xattrProblem("user.", 1) == "empty name after the namespace");
    // Linux's limit is on the whole name (XATTR_NAME_MAX): getxattr(2) of a longer one is ERANGE.
    CHECK(xattrProblem("user." + std::string(251, 'n'), 1) == "name longer than 255 bytes");
    CHECK(xattrProblem("user.big", 65536) == "value longer than 65535 bytes");
}

// Inline, as RAFS v6 keeps them: 4-byte slots counted in 16 bits (i_xattr_icount). Four values of
// 60,000 bytes take 60,009 slots with the header's, five 75,011.
TEST_CASE("xattrSetProblem bounds the xattrs of one inode", "[tree]") {
    std::vector<Xattr> xattrs;
    for (int i = 0; i < 4; ++i) xattrs.emplace_back("user." + std::to_string(i), std::string(60000, 'v'));
    CHECK(xattrSetProblem(xattrs).empty());
    xattrs.emplace_back("user.4", std::string(60000, 'v'));
    CHECK(xattrSetProblem(xattrs) == "xattrs of one inode exceed the inline limit");
    CHECK(xattrSetProblem({}).empty());
}

// ACL values as the kernel checks them (fs/posix_acl.c): a valid one is kept, others refused.
TEST_CASE("xattrSetProblem refuses ACL values the kernel would not take", "[tree]") {
    const auto entry = [](uint16_t tag, uint16_t perm, uint32_t id = 0xffffffff) {
        std::string e(8, '\0');
        e[0] = static_cast<char>(tag), e[1] = static_cast<char>(tag >> 8), e[2] = static_cast<char>(perm);
        for (size_t i = 0; i < 4; ++i) e[4 + i] = static_cast<char>(id >> (8 * i));
        return e;
    };
    const std::string v2("\x02\x00\x00\x00", 4);
    const std::string minimal = v2 + entry(0x01, 6) + entry(0x04, 4) + entry(0x20, 4);
    const std::string named = v2 + entry(0x01, 7) + entry(0x02, 6, 1000) + entry(0x04, 5) + entry(0x10, 7) + entry(0x20, 5);
    for (const std::string name : {"system.posix_acl_access", "system.posix_acl_default"}) {
        CHECK(xattrSetProblem({{name, minimal}}).empty());
        CHECK(xattrSetProblem({{name, named}}).empty());
        CHECK(xattrSetProblem({{name, v2}}).empty());  // no entries: no ACL
        for (const std::string& bad : {std::string("garbage"), std::string(v2 + "x"),
                                       std::string("\x01\x00\x00\x00", 4) + entry(0x01, 6),  // version 1
                                       v2 + entry(0x01, 6),                                        // no group::, other::
                                       v2 + entry(0x01, 6) + entry(0x02, 6, 1) + entry(0x04, 4) + entry(0x20, 4),  // no mask
                                       v2 + entry(0x04, 4) + entry(0x01, 6) + entry(0x20, 4),      // out of order
                                       v2 + entry(0x01, 8) + entry(0x04, 4) + entry(0x20, 4)}) {   // permission 8
            CHECK_THAT(std::string(xattrSetProblem({{name, bad}})), Catch::Contains("no valid POSIX ACL"));
        }
    }
}

TEST_CASE("resolve follows symlinks as a reader opening the path does", "[tree]") {
    FileTree tree;
    tree.put("usr", makeInode(S_IFDIR | 0755), 0);
    tree.put("usr/lib", makeInode(S_IFDIR | 0755), 0);
    tree.put("usr/bin", makeInode(S_IFDIR | 0755), 0);
    Node& libc = tree.put("usr/lib/libc.so.6", makeInode(S_IFREG | 0755), 0);
    Node& python = tree.put("usr/bin/python3.11", makeInode(S_IFREG | 0755), 0);
    auto link = [&](const char* path, const char* target) {
        auto inode = makeInode(S_IFLNK | 0777);
        inode->symlink_target = target;
        tree.put(path, inode, 0);
    };
    link("lib", "usr/lib");                // merged /usr
    link("bin", "/usr/bin");               // absolute
    link("usr/bin/python3", "python3.11");  // the last component, relative to its directory
    link("usr/lib/up", "../../../usr/lib/libc.so.6");  // ".." stops at the root
    link("loop1", "loop2");
    link("loop2", "loop1");
    link("dangling", "nowhere");
    link("slashed", "usr/bin/python3.11/");
    CHECK(tree.resolve("/lib/libc.so.6") == &libc);
    CHECK(tree.resolve("/bin/python3") == &python);
    CHECK(tree.resolve("lib/up") == &libc);
    CHECK(tree.resolve("/usr/lib/../bin/python3.11") == &python);
    CHECK(tree.resolve("/lib") == tree.find("/usr/lib"));
    CHECK(tree.resolve("/") == &tree.root());
    CHECK(tree.resolve("/loop1") == nullptr);
    CHECK(tree.resolve("/loop1/x") == nullptr);
    CHECK(tree.resolve("/dangling") == nullptr);
    CHECK(tree.resolve("/lib/libc.so.6/x") == nullptr);  // below a file
    CHECK(tree.resolve("/lib/missing") == nullptr);
    // A trailing slash names a directory, as for open(2): ENOTDIR after a file.
    CHECK(tree.resolve("/lib/") == tree.find("/usr/lib"));
    CHECK(tree.resolve("/usr/lib/./") == tree.find("/usr/lib"));
    CHECK(tree.resolve("/lib/libc.so.6/") == nullptr);
    CHECK(tree.resolve("/bin/python3/") == nullptr);
    CHECK(tree.resolve("/slashed") == nullptr);
}
