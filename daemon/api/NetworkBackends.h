// The http and registry backends as the configuration describes them: one registry client stack
// (TLS, transport, retries, proxy, credentials) per backend, shared by every mount that uses it.
#pragma once

#include "daemon/api/Config.h"
#include "daemon/backends/HttpBackend.h"
#include "daemon/backends/NetworkBackend.h"
#include "daemon/backends/RegistryBackend.h"

#include <nlohmann/json.hpp>

#include <memory>

namespace rafsd {

// For backend.type http; throws rafs::Error naming a file (CA, key) it cannot use.
std::shared_ptr<HttpBackend> makeHttpBackend(const Config::Backend& config);

// The registry backend of repository `repository` at `host` (a mount by image reference), with the
// transport, [backend.hosts] settings and credentials of `config`, whatever its backend.type.
std::shared_ptr<RegistryBackend> makeRegistryBackend(const Config::Backend& config, const std::string& host,
                                                     const std::string& repository);

// For `rafsctl status`: {"backend", "requests", "bytes", "retries", "failures", "token_refreshes",
// "whole_blob_answers", "latency_p50_us", "latency_p99_us"}. Never a secret: the description holds
// no credentials.
nlohmann::json networkStatus(NetworkBackend& backend);

}  // namespace rafsd
