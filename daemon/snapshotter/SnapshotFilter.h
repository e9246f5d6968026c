// containerd's filter syntax (containerd filters/filter.go) for List: "a==x,labels.\"k\"!=y" is
// one filter whose clauses must all hold; a snapshot is listed when any of the filters holds.
// Selectors: name, parent, kind, labels.<key> or labels."<key>"; operators == != ~= (regular
// expression), or none (the field is present). containerd itself asks for
// `labels."containerd.io/snapshot.ref"==<chain id>,parent=="<key>"` after an ALREADY_EXISTS.
#pragma once

#include "daemon/snapshotter/SnapshotStore.h"

#include <string>
#include <string_view>
#include <vector>

namespace rafsd {

class SnapshotFilter {
public:
    // Throws rafs::Error naming the filter and what is wrong with it.
    explicit SnapshotFilter(const std::vector<std::string>& filters);
    bool matches(const std::string& key, const Snapshot& snapshot) const;

private:
    enum class Op { Present, Equal, NotEqual, Matches };
    struct Clause {
        std::string field;  // "name", "parent", "kind" or "labels"
        std::string label;  // for "labels"
        Op op = Op::Present;
        std::string value;
    };
    static std::vector<Clause> parse(std::string_view filter);
    static bool holds(const Clause& clause, const std::string& key, const Snapshot& snapshot);

    std::vector<std::vector<Clause>> any_;
};

}  // namespace rafsd
