#include "daemon/api/NetworkBackends.h"

#include "registry/TlsConfig.h"

namespace rafsd {

namespace {

std::shared_ptr<registry::RetryingTransport> transportFor(const Config::Backend& config) {
    std::map<std::string, registry::HostTlsFiles> tls_files;
    for (const auto& [host, settings] : config.hosts) {
        tls_files[host] = {settings.ca_file, settings.client_cert, settings.client_key};
    }
    auto tls = std::make_shared<registry::TlsConfig>(tls_files, config.transport.certs_dir);
    const Config::Transport& t = config.transport;
    registry::TransportOptions options;
    options.connect_timeout = std::chrono::seconds(t.connect_timeout);
    options.timeout = std::chrono::seconds(t.timeout);
    options.low_speed_limit = static_cast<uint32_t>(t.low_speed_limit);
    options.low_speed_time = std::chrono::seconds(t.low_speed_time);
    registry::RetryOptions retry;
    retry.retries = t.retries;
    retry.backoff_base = std::chrono::milliseconds(t.backoff_base_ms);
    retry.backoff_max = std::chrono::milliseconds(t.backoff_max_ms);
    retry.retry_after_max = std::chrono::seconds(t.retry_after_max);
    return std::make_shared<registry::RetryingTransport>(std::make_shared<registry::HttpTransport>(options, tls),
                                                         registry::RetryPolicy(retry), t.proxy,
                                                         std::chrono::seconds(t.proxy_skip),
                                                         std::make_shared<registry::TransferStats>());
}

}  // namespace

std::shared_ptr<RegistryBackend> makeRegistryBackend(const Config::Backend& config, const std::string& host,
                                                     const std::string& repository) {
    registry::RegistryOptions options;
    options.host = host;
    options.repository = repository;
    if (auto it = config.hosts.find(options.host); it != config.hosts.end()) {
        options.plain_http = it->second.plain_http;
        options.mirrors = it->second.mirrors;
        options.mirrors_resolve_tags = it->second.mirrors_resolve_tags;
    }
    options.mirror_skip = std::chrono::seconds(config.transport.mirror_skip);
    auto credentials = std::make_shared<registry::CredentialStore>(config.registry.docker_config);
    return std::make_shared<RegistryBackend>(
        std::make_shared<registry::RegistryClient>(options, transportFor(config), std::move(credentials)));
}

std::shared_ptr<HttpBackend> makeHttpBackend(const Config::Backend& config) {
    return std::make_shared<HttpBackend>(std::make_unique<registry::HttpBlobClient>(config.http.url, transportFor(config)));
}

nlohmann::json networkStatus(NetworkBackend& backend) {
    registry::TransferStats& s = backend.stats();
    const auto latency = s.latency();
    return {{"backend", backend.describe()},
            {"requests", s.requests.load()},
            {"bytes", s.bytes.load()},
            {"retries", s.retries.load()},
            {"failures", s.failures.load()},
            {"token_refreshes", s.token_refreshes.load()},
            {"whole_blob_answers", s.whole_blob_answers.load()},
            {"latency_p50_us", latency.p50_us},
            {"latency_p99_us", latency.p99_us}};
}

}  // namespace rafsd
