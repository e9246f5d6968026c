#include "daemon/snapshotter/SnapshotFilter.h"

#include "format/Error.h"

#include <regex>

namespace rafsd {

namespace {

// A quoted string at text[pos] ("..." with \" and \\ escapes); moves pos past it.
std::string quoted(std::string_view text, size_t& pos, std::string_view filter) {
    std::string out;
    for (++pos; pos < text.size(); ++pos) {
        if (text[pos] == '\\' && pos + 1 < text.size()) {
            out += text[++pos];
        } else if (text[pos] == '"') {
            ++pos;
            return out;
        } else {
            out += text[pos];
        }
    }
    rafs::fail("filter '{}': unterminated quote", filter);
}

}  // namespace

SnapshotFilter::SnapshotFilter(const std::vector<std::string>& filters) {
    for (const std::string& f : filters) {
        if (!f.empty()) any_.push_back(parse(f));
    }
}

std::vector<SnapshotFilter::Clause> SnapshotFilter::parse(std::string_view filter) {
    std::vector<Clause> clauses;
    size_t pos = 0;
    const auto isOpChar = [](char c) { return c == '=' || c == '!' || c == '~' || c == ','; };
    while (pos < filter.size()) {
        Clause c;
        size_t start = pos;
        while (pos < filter.size() && filter[pos] != '.' && !isOpChar(filter[pos])) ++pos;
        c.field = std::string(filter.substr(start, pos - start));
        if (c.field == "labels") {
            if (pos >= filter.size() || filter[pos] != '.') rafs::fail("filter '{}': labels without a key", filter);
            ++pos;
            if (pos < filter.size() && filter[pos] == '"') {
                c.label = quoted(filter, pos, filter);
            } else {
                start = pos;
                while (pos < filter.size() && !isOpChar(filter[pos])) ++pos;
                c.label = std::string(filter.substr(start, pos - start));
            }
            if (c.label.empty()) rafs::fail("filter '{}': labels without a key", filter);
        } else if (c.field != "name" && c.field != "parent" && c.field != "kind") {
            rafs::fail("filter '{}': unknown field '{}'", filter, c.field);
        }
        if (pos < filter.size() && filter[pos] != ',') {
            const std::string_view op = filter.substr(pos, 2);
            if (op == "==") c.op = Op::Equal;
            else if (op == "!=") c.op = Op::NotEqual;
            else if (op == "~=") c.op = Op::Matches;
            else rafs::fail("filter '{}': unknown operator at '{}'", filter, filter.substr(pos));
            pos += 2;
            if (pos < filter.size() && filter[pos] == '"') {
                c.value = quoted(filter, pos, filter);
            } else {
                start = pos;
                while (pos < filter.size() && filter[pos] != ',') ++pos;
                c.value = std::string(filter.substr(start, pos - start));
            }
            if (c.op == Op::Matches) {
                try {
                    std::regex check(c.value);
                } catch (const std::regex_error&) {
                    rafs::fail("filter '{}': '{}' is not a regular expression", filter, c.value);
                }
            }
        }
        if (pos < filter.size()) {
            if (filter[pos] != ',') rafs::fail("filter '{}': unexpected '{}'", filter, filter.substr(pos));
            ++pos;
        }
        clauses.push_back(std::move(c));
    }
    return clauses;
}

bool SnapshotFilter::holds(const Clause& c, const std::string& key, const Snapshot& s) {
    std::string value;
    if (c.field == "name") {
        value = key;
    } else if (c.field == "parent") {
        value = s.parent;
    } else if (c.field == "kind") {
        value = kindName(s.kind);
    } else {
        auto it = s.labels.find(c.label);
        if (it == s.labels.end()) return c.op == Op::NotEqual;
        value = it->second;
    }
    switch (c.op) {
    case Op::Present: return true;
    case Op::Equal: return value == c.value;
    case Op::NotEqual: return value != c.value;
    case Op::Matches: return std::regex_search(value, std::regex(c.value));
    }
    return false;
}

bool SnapshotFilter::matches(const std::string& key, const Snapshot& snapshot) const {
    if (any_.empty()) return true;
    for (const auto& clauses : any_) {
        bool all = true;
        for (const Clause& c : clauses) all = all && holds(c, key, snapshot);
        if (all) return true;
    }
    return false;
}

}  // namespace rafsd
