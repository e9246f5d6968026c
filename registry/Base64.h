// Standard base64 (RFC 4648 with padding): Basic credentials and docker config.json "auth".
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace registry {

std::string base64Encode(std::string_view bytes);
// nullopt if `text` is not padded base64.
std::optional<std::string> base64Decode(std::string_view text);

}  // namespace registry
