#include "builder/tree/FileTree.h"

#include "format/Error.h"

#include <sys/stat.h>

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

Node* child(Node& dir, std::string_view name) {
    auto it = dir.children.find(std::string(name));
    return it == dir.children.end() ? nullptr : it->second.get();
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
