#include "registry/TlsConfig.h"

#include "format/Error.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdio>

namespace registry {

namespace fs = std::filesystem;

namespace {

void addCas(HostTls& tls, const fs::path& file) {
    FILE* in = std::fopen(file.c_str(), "re");
    if (in == nullptr) rafs::failErrno("CA file " + file.string());
    size_t before = tls.extra_cas.size();
    while (X509* cert = PEM_read_X509(in, nullptr, nullptr, nullptr)) tls.extra_cas.push_back(cert);
    std::fclose(in);
    if (tls.extra_cas.size() == before) rafs::fail("CA file {}: no PEM certificate in it", file.string());
}

void checkReadable(const fs::path& file, std::string_view what) {
    FILE* in = std::fopen(file.c_str(), "re");
    if (in == nullptr) rafs::failErrno(fmt::format("{} {}", what, file.string()));
    std::fclose(in);
}

std::shared_ptr<HostTls> fromFiles(const HostTlsFiles& files) {
    auto tls = std::make_shared<HostTls>();
    if (!files.ca_file.empty()) addCas(*tls, files.ca_file);
    if (files.client_cert.empty() != files.client_key.empty()) {
        rafs::fail("client certificate {} needs its key, and a key its certificate",
                   (files.client_cert.empty() ? files.client_key : files.client_cert).string());
    }
    if (!files.client_cert.empty()) {
        checkReadable(files.client_cert, "client certificate");
        checkReadable(files.client_key, "client key");
        tls->client_cert = files.client_cert;
        tls->client_key = files.client_key;
    }
    return tls;
}

// Docker's certs.d/<host>/: every *.crt a CA, one *.cert with its same-stem *.key.
std::shared_ptr<HostTls> fromCertsDir(const fs::path& dir) {
    auto tls = std::make_shared<HostTls>();
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return tls;
    std::vector<fs::path> entries;
    for (const auto& entry : fs::directory_iterator(dir, ec)) entries.push_back(entry.path());
    if (ec) rafs::fail("cannot list {}: {}", dir.string(), ec.message());
    std::ranges::sort(entries);
    for (const fs::path& p : entries) {
        if (p.extension() == ".crt") addCas(*tls, p);
        if (p.extension() == ".cert" || p.extension() == ".key") {
            fs::path cert = p, key = p;
            cert.replace_extension(".cert");
            key.replace_extension(".key");
            if (!fs::exists(cert) || !fs::exists(key)) {
                rafs::fail("{}: a client certificate needs both {} and {}", dir.string(), cert.filename().string(),
                           key.filename().string());
            }
            tls->client_cert = cert;
            tls->client_key = key;
        }
    }
    return tls;
}

}  // namespace

HostTls::~HostTls() {
    for (X509* cert : extra_cas) X509_free(cert);
}

TlsConfig::TlsConfig(const std::map<std::string, HostTlsFiles>& hosts, fs::path certs_dir)
    : certs_dir_(std::move(certs_dir)) {
    for (const auto& [authority, files] : hosts) {
        // A host configured for something else (mirrors, plain_http) takes its files from certs_dir.
        if (files.ca_file.empty() && files.client_cert.empty() && files.client_key.empty()) continue;
        try {
            hosts_[authority] = fromFiles(files);
        } catch (const rafs::Error& e) {
            rafs::fail("host {}: {}", authority, e.what());
        }
    }
}

std::shared_ptr<const HostTls> TlsConfig::forHost(const std::string& authority) const {
    std::lock_guard lock(mutex_);
    auto it = hosts_.find(authority);
    if (it != hosts_.end()) return it->second;
    // Host names never hold '/', so the name cannot leave certs_dir.
    std::shared_ptr<const HostTls> tls = certs_dir_.empty() || authority.find('/') != std::string::npos
                                             ? std::make_shared<HostTls>()
                                             : fromCertsDir(certs_dir_ / authority);
    hosts_[authority] = tls;
    return tls;
}

}  // namespace registry
