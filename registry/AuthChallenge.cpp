#include "registry/AuthChallenge.h"

#include <algorithm>
#include <cctype>

namespace registry {

namespace {

class Tokenizer {
public:
    explicit Tokenizer(std::string_view text) : text_(text) {}

    bool done() {
        skipSpace();
        return pos_ >= text_.size();
    }
    void skipSpace() {
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
    }
    bool take(char c) {
        skipSpace();
        if (pos_ < text_.size() && text_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    bool peek(char c) {
        skipSpace();
        return pos_ < text_.size() && text_[pos_] == c;
    }
    std::string token() {
        skipSpace();
        const size_t start = pos_;
        while (pos_ < text_.size() && text_[pos_] != ' ' && text_[pos_] != '\t' && text_[pos_] != ',' &&
               text_[pos_] != '=' && text_[pos_] != '"') {
            ++pos_;
        }
        return std::string(text_.substr(start, pos_ - start));
    }
    // A token or a quoted string with backslash escapes.
    std::string value() {
        skipSpace();
        if (pos_ >= text_.size() || text_[pos_] != '"') return token();
        std::string out;
        for (++pos_; pos_ < text_.size() && text_[pos_] != '"'; ++pos_) {
            if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;
            out += text_[pos_];
        }
        if (pos_ < text_.size()) ++pos_;
        return out;
    }
    // Whether the next token is followed by '=' (a parameter, not a new scheme).
    bool paramAhead() {
        const size_t saved = pos_;
        const bool empty = token().empty();
        const bool param = !empty && peek('=');
        pos_ = saved;
        return param;
    }
    void skipToComma() {
        while (pos_ < text_.size() && text_[pos_] != ',') ++pos_;
    }

private:
    std::string_view text_;
    size_t pos_ = 0;
};

std::string lower(std::string text) {
    std::ranges::transform(text, text.begin(), [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
    return text;
}

}  // namespace

std::vector<AuthChallenge> parseChallenges(std::string_view header) {
    std::vector<AuthChallenge> challenges;
    Tokenizer t(header);
    while (!t.done()) {
        if (t.take(',')) continue;
        std::string scheme = t.token();
        if (scheme.empty()) {
            t.skipToComma();
            continue;
        }
        AuthChallenge challenge{lower(scheme), {}};
        for (;;) {
            while (t.take(',')) {
            }
            if (t.done() || !t.paramAhead()) break;
            std::string name = lower(t.token());
            t.take('=');
            challenge.params[name] = t.value();
        }
        challenges.push_back(std::move(challenge));
    }
    return challenges;
}

}  // namespace registry
