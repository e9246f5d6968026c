#include "builder/tree/FileTree.h"

#include "format/Error.h"

#include <sys/stat.h>

#include <algorithm>
#include <vector>

namespace rafs::build {

namespace {

// The path's components below the root, per FileTree.h's rules.
std::vector<std::string_view> components(std::string_view path) {
    std::string_view rest = path;
    // A leading "/", "./", or a lone "." all mean the root.
    for (;;) {
        if (rest.starts_with('/')) {
            rest.remove_prefix(1);
        } else if (rest.starts_with("./")) {
            rest.remove_prefix(2);
        } else if (rest == ".") {
            rest = {};
        } else {
            break;
        }
    }
    std::vector<std::string_view> parts;
    while (!rest.empty()) {
        const size_t slash = rest.find('/');
        const std::string_view part = rest.substr(0, slash);
        rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
        if (part.empty()) continue;
        if (part == "." || part == "..") fail("path {}: '{}' component not allowed", path, part);
        parts.push_back(part);
    }
    return parts;
}

// A symlink's target as names for FileTree::followDirs, "" and "." included (it skips them).
std::deque<std::string> targetNames(const std::string& target) {
    std::deque<std::string> names;
    for (size_t start = 0; start <= target.size();) {
        const size_t slash = std::min(target.find('/', start), target.size());
        names.push_back(target.substr(start, slash - start));
        start = slash + 1;
    }
    return names;
}

unsigned depthOf(const Node& node) {
    unsigned depth = 0;
    for (const Node* n = node.parent; n != nullptr; n = n->parent) ++depth;
    return depth;
}

constexpr std::string_view kOpaqueWhiteout = ".wh..wh..opq";

// Empties `dir` of entries of layers below `layer`, at any depth, but for directories that hold
// entries of `layer`.
void removeLowerLayers(Node& dir, unsigned layer) {
    for (auto it = dir.children.begin(); it != dir.children.end();) {
        Node& entry = *it->second;
        removeLowerLayers(entry, layer);
        if (entry.layer < layer && entry.children.empty()) {
            it = dir.children.erase(it);
        } else {
            ++it;
        }
    }
}

}  // namespace

Node* FileTree::child(Node& dir, std::string_view name) {
    auto it = dir.children.find(std::string(name));
    return it == dir.children.end() ? nullptr : it->second.get();
}

FileTree::FileTree() {
    root_.inode = std::make_shared<Inode>();
    root_.inode->mode = S_IFDIR | 0755;
}

Node* FileTree::find(std::string_view path) {
    Node* node = &root_;
    for (std::string_view part : components(path)) {
        node = child(*node, part);
        if (node == nullptr) return nullptr;
    }
    return node;
}

Node* FileTree::followDirs(Node& from, std::deque<std::string> names, unsigned& links, std::optional<unsigned> create) {
    Node* dir = &from;
    unsigned depth = depthOf(from);
    while (!names.empty()) {
        const std::string name = std::move(names.front());
        names.pop_front();
        if (name.empty() || name == ".") continue;
        if (name == "..") {
            if (dir->parent != nullptr) {
                dir = dir->parent;
                --depth;
            }
            continue;
        }
        Node* next = child(*dir, name);
        if (next != nullptr && next->inode->isLink()) {
            if (++links > kMaxSymlinks) fail("more than {} symlinks in its path", kMaxSymlinks);
            const std::string& target = next->inode->symlink_target;
            std::deque<std::string> target_names = targetNames(target);
            names.insert(names.begin(), target_names.begin(), target_names.end());
            if (target.starts_with('/')) {
                dir = &root_;
                depth = 0;
            }
            continue;
        }
        if (next == nullptr) {
            if (!create) return nullptr;
            auto inode = std::make_shared<Inode>();
            inode->mode = S_IFDIR | 0755;
            next = &put(*dir, name, std::move(inode), *create);
        } else if (!next->inode->isDir()) {
            if (!create) return nullptr;
            fail("parent {} is not a directory", pathOf(*next));
        }
        if (++depth >= kMaxDepth) fail("deeper than {} directories", kMaxDepth);
        dir = next;
    }
    return dir;
}

Node* FileTree::resolve(std::string_view path) {
    unsigned links = 0;
    Node* start = &root_;
    std::deque<std::string> names = targetNames(std::string(path));
    bool must_be_dir = false;  // a trailing "/" (or "/."), here or in a symlink's target: ENOTDIR otherwise
    for (;;) {
        while (!names.empty() && (names.back().empty() || names.back() == ".")) {
            names.pop_back();
            must_be_dir = true;
        }
        if (names.empty()) return start;
        const std::string last = std::move(names.back());
        names.pop_back();
        Node* dir = nullptr;
        try {
            dir = followDirs(*start, std::move(names), links, std::nullopt);
        } catch (const Error&) {  // too many symlinks: ELOOP for a reader
            return nullptr;
        }
        if (dir == nullptr) return nullptr;
        if (last == "..") return dir->parent != nullptr ? dir->parent : dir;
        Node* node = child(*dir, last);
        if (node != nullptr && must_be_dir && !node->inode->isDir() && !node->inode->isLink()) return nullptr;
        if (node == nullptr || !node->inode->isLink()) return node;
        if (++links > kMaxSymlinks) return nullptr;
        names = targetNames(node->inode->symlink_target);
        start = node->inode->symlink_target.starts_with('/') ? &root_ : dir;
    }
}

Node& FileTree::put(std::string_view path, std::shared_ptr<Inode> inode, unsigned layer) {
    const auto parts = components(path);
    if (parts.empty()) {
        if (!inode->isDir()) fail("path {}: the root can only be replaced by a directory", path);
        root_.inode = std::move(inode);
        root_.layer = layer;
        return root_;
    }
    Node* parent = &root_;
    std::string parent_path;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
        parent_path.append("/").append(parts[i]);
        parent = child(*parent, parts[i]);
        if (parent == nullptr) fail("path {}: parent {} does not exist", path, parent_path);
        if (!parent->inode->isDir()) {
            fail("path {}: parent {} is not a directory", path, parent_path);
        }
    }
    return put(*parent, parts.back(), std::move(inode), layer);
}

Node& FileTree::put(Node& dir, std::string_view name, std::shared_ptr<Inode> inode, unsigned layer) {
    auto it = dir.children.find(std::string(name));
    if (it != dir.children.end()) {
        Node& old = *it->second;
        if (old.inode->isDir() && inode->isDir()) {
            old.inode = std::move(inode);
            old.layer = layer;
            return old;
        }
        dir.children.erase(it);
    }
    auto node = std::make_unique<Node>();
    node->name = name;
    node->parent = &dir;
    node->inode = std::move(inode);
    node->layer = layer;
    return *dir.children.emplace(std::string(name), std::move(node)).first->second;
}

bool FileTree::remove(std::string_view path) {
    const auto parts = components(path);
    if (parts.empty()) fail("path {}: the root cannot be removed", path);
    Node* node = find(path);
    if (node == nullptr) return false;
    auto& siblings = node->parent->children;
    siblings.erase(siblings.find(node->name));
    return true;
}

std::string FileTree::pathOf(const Node& node) {
    std::vector<const Node*> chain;
    for (const Node* n = &node; n->parent != nullptr; n = n->parent) chain.push_back(n);
    std::string path;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) path.append("/").append((*it)->name);
    return path.empty() ? "/" : path;
}

bool FileTree::applyWhiteout(Node* dir, std::string_view name, unsigned layer) {
    if (name == kOpaqueWhiteout) {
        if (dir != nullptr) removeLowerLayers(*dir, layer);
        return true;
    }
    const std::string_view hidden = name.substr(kWhiteoutPrefix.size());
    if (hidden.empty() || hidden == "." || hidden == "..") return false;
    if (dir == nullptr) return true;
    auto it = dir->children.find(std::string(hidden));
    if (it == dir->children.end()) return true;
    // What this layer put there stays, wherever the whiteout comes in the layer. A lower directory
    // that holds entries of this layer stays as their parent, with its own metadata: the layer
    // gives none for it (OCI layer.md leaves such a case open).
    Node& entry = *it->second;
    removeLowerLayers(entry, layer);
    if (entry.layer < layer && entry.children.empty()) dir->children.erase(it);
    return true;
}

}  // namespace rafs::build
