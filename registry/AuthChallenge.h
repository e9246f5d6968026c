// WWW-Authenticate challenges (RFC 7235): `Bearer realm="...",service="...",scope="a b"` or
// `Basic realm="..."`, possibly several in one header. Quoted values hold commas, so the header is
// tokenized, not split.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace registry {

struct AuthChallenge {
    std::string scheme;                         // lower case: "basic", "bearer", ...
    std::map<std::string, std::string> params;  // names lower case

    std::string param(const std::string& name) const {
        auto it = params.find(name);
        return it == params.end() ? std::string() : it->second;
    }
};

std::vector<AuthChallenge> parseChallenges(std::string_view header);

}  // namespace registry
