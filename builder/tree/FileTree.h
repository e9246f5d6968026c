// A directory tree of named entries. Layers are applied to it in order (OCI whiteouts included)
// before the bootstrap writer lays it out.
#pragma once

#include "builder/tree/Inode.h"

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace rafs::build {

struct Node {
    std::string name;  // "" for the root
    Node* parent = nullptr;
    std::shared_ptr<Inode> inode;
    std::map<std::string, std::unique_ptr<Node>> children;  // bytewise order (std::string <)
    unsigned layer = 0;  // index of the layer that last created this entry
};

class FileTree {
public:
    FileTree();

    Node& root() { return root_; }
    const Node& root() const { return root_; }

    // Path components are separated by '/'; leading "/" and "./" and empty components are
    // ignored; "." and ".." components are rejected with Error. Returns nullptr if absent.
    Node* find(std::string_view path);
    // The entry `name` (one component) of `dir`; nullptr if none.
    static Node* child(Node& dir, std::string_view name);

    // Symlinks followed in one lookup at most: Linux's MAXSYMLINKS (include/linux/namei.h).
    static constexpr unsigned kMaxSymlinks = 40;
    // Directories made below the root at most (`create` in followDirs).
    static constexpr unsigned kMaxDepth = 2048;

    // The directory that `names` lead to from `from`, found as a lookup inside the image's root
    // finds it: "" and "." are skipped, ".." goes up but not past the root, and a symlink is
    // followed (an absolute target from the root), at most kMaxSymlinks of them counting `links`,
    // which the caller starts at 0. Missing: nullptr, or with `create` a directory of that layer
    // is made. Not a directory: nullptr, or Error with `create`. Error for too many symlinks or
    // too deep a tree. containerd's archive.Apply applies a layer's members so (fs.RootPath), and
    // umoci (securejoin): "lib/x" over "lib -> usr/lib" is /usr/lib/x.
    Node* followDirs(Node& from, std::deque<std::string> names, unsigned& links, std::optional<unsigned> create);

    // The entry `path` names as a reader opening it gets it: followDirs for its directories, then
    // a symlink in its last component followed too. nullptr if absent, or for a symlink loop.
    Node* resolve(std::string_view path);

    // Puts `inode` at `path`, replacing whatever entry was there (a replaced directory loses
    // its subtree unless the new entry is a directory too, in which case children are kept and
    // only the inode is replaced). Parent directories must exist. Returns the entry.
    Node& put(std::string_view path, std::shared_ptr<Inode> inode, unsigned layer);
    // The same for the entry `name` (one component) of the directory `dir`.
    Node& put(Node& dir, std::string_view name, std::shared_ptr<Inode> inode, unsigned layer);

    // The path of `node` from the root ("/" for the root), as walk() gives it.
    static std::string pathOf(const Node& node);

    // Removes the entry at `path` with its subtree; false if there was none.
    bool remove(std::string_view path);

    // Whether an entry `name` of a layer is an OCI whiteout (image-spec layer.md): ".wh.NAME"
    // hides NAME, the opaque ".wh..wh..opq" all else in its directory. Neither is an entry itself.
    static constexpr std::string_view kWhiteoutPrefix = ".wh.";
    static bool isWhiteout(std::string_view name) { return name.starts_with(kWhiteoutPrefix); }
    // Applies whiteout `name` of layer `layer` to directory `dir`: it hides only what lower layers
    // put there, at any depth (a lower-layer directory holding entries of this layer stays, as
    // their parent). `dir` null: a directory no layer has made, where it hides nothing. False,
    // hiding nothing, if `name` names no entry (".wh.", ".wh..", ".wh...").
    [[nodiscard]] bool applyWhiteout(Node* dir, std::string_view name, unsigned layer);

    // Keeps `inode` alive as long as the tree even after its entries are replaced or removed,
    // as a ChunkSink may fill inode.chunks after the source has moved on.
    void retain(std::shared_ptr<Inode> inode) { retained_.push_back(std::move(inode)); }

    // Calls fn(node, path) for every entry, parents before children, children in name order.
    template <typename Fn>
    void walk(Fn&& fn) { walkFrom(root_, "/", fn); }

    // Calls fn(inode) once for every inode in the tree, in walk() order: a hardlinked file is one
    // inode under several names, and what changes an inode must change it once.
    template <typename Fn>
    void forEachInode(Fn&& fn) {
        std::unordered_set<const Inode*> seen;
        walk([&](Node& n, const std::string&) {
            if (n.inode && seen.insert(n.inode.get()).second) fn(*n.inode);
        });
    }

private:
    template <typename Fn>
    static void walkFrom(Node& n, const std::string& path, Fn& fn) {
        fn(n, path);
        for (auto& [name, child] : n.children) {
            walkFrom(*child, path == "/" ? "/" + name : path + "/" + name, fn);
        }
    }

    Node root_;
    std::vector<std::shared_ptr<Inode>> retained_;
};

}  // namespace rafs::build
