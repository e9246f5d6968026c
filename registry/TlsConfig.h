// TLS settings per host[:port]: the system's CAs always, plus CA certificates and a client
// certificate (mTLS) from the configuration or from Docker's /etc/docker/certs.d/<host>/ layout
// (*.crt are CAs, *.cert with the same-stem *.key a client pair).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

typedef struct x509_st X509;

namespace registry {

struct HostTlsFiles {
    std::filesystem::path ca_file;      // PEM, one or more CA certificates; empty: none
    std::filesystem::path client_cert;  // PEM; with client_key, or neither
    std::filesystem::path client_key;
};

// What a connection to one host uses; parsed once.
class HostTls {
public:
    HostTls() = default;
    ~HostTls();
    HostTls(const HostTls&) = delete;
    HostTls& operator=(const HostTls&) = delete;

    std::vector<X509*> extra_cas;  // added to the system's trust store, owned
    std::string client_cert;       // paths; empty: none
    std::string client_key;
};

class TlsConfig {
public:
    // `certs_dir`: the Docker layout's root (empty: not used), for every host without files in
    // `hosts`. Configured files are read here, so a missing or unreadable one is an error at
    // startup naming it.
    TlsConfig(const std::map<std::string, HostTlsFiles>& hosts, std::filesystem::path certs_dir);

    // The settings for `authority` (host[:port]): the configured ones, else the certs_dir ones.
    // Throws rafs::Error naming a file of certs_dir that cannot be used.
    std::shared_ptr<const HostTls> forHost(const std::string& authority) const;

private:
    std::filesystem::path certs_dir_;
    mutable std::mutex mutex_;
    mutable std::map<std::string, std::shared_ptr<const HostTls>> hosts_;  // configured, then looked up
};

}  // namespace registry
