// A per-sandbox certificate authority for TLS interception. Its certificate
// goes into the sandbox's trust store; the egress proxy presents leaves it
// mints for the hosts named in the sandbox's secrets, and for nothing else:
// a name constraint (critical) confines the CA to those hosts, so a CA
// certificate that leaks out of the sandbox cannot vouch for other names.
// The private key never leaves the daemon's memory.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_st X509;

namespace sandboxd::net {

// Thread-safe: ServerContextFor() may be called from any thread; the
// contexts it returns are immutable and may be shared between connections.
class SandboxCa {
 public:
  // `hosts`: the secret hosts this CA may mint leaves for — DNS names
  // ("api.example.com", "*.example.com"), IPv4 or IPv6 literals ("[::1]" or
  // "::1"); a ":port" suffix ("api.example.com:443", "[::1]:8443") is
  // ignored. An EC P-256 key, valid from an hour
  // ago (clock skew) for 30 days, CA:TRUE pathlen 0, keyCertSign|cRLSign.
  // Name constraints: when every host is a DNS name, those names are the
  // only permitted dNSName subtrees and every IP address is excluded;
  // otherwise the names and addresses are the only permitted subtrees.
  static Result<std::shared_ptr<SandboxCa>> Create(std::string_view sandbox_id,
                                                   const std::vector<std::string>& hosts);
  ~SandboxCa();
  SandboxCa(const SandboxCa&) = delete;
  SandboxCa& operator=(const SandboxCa&) = delete;

  // The CA certificate (PEM), for the sandbox's trust store.
  const std::string& CertPem() const { return cert_pem_; }

  // A TLS 1.2+ server context presenting a leaf for `host` (SNI name or IP
  // literal; case and a trailing dot do not matter), minted on first use
  // and cached. ALPN: selects "http/1.1"; a client that offers ALPN without
  // it gets a fatal no_application_protocol alert. Fails for a host the CA
  // was not created for.
  Result<std::shared_ptr<boost::asio::ssl::context>> ServerContextFor(std::string_view host);

  // Whether `host` is one of this CA's hosts (exactly, or under a "*."
  // entry).
  bool Covers(std::string_view host) const;

 private:
  SandboxCa() = default;
  Result<std::shared_ptr<boost::asio::ssl::context>> Mint(const std::string& host);

  EVP_PKEY* key_ = nullptr;
  X509* cert_ = nullptr;
  std::string cert_pem_;
  std::vector<std::string> dns_;  // normalised; "*.x" kept as is
  std::vector<std::string> ips_;  // canonical text form
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<boost::asio::ssl::context>> leaves_;  // guarded by mu_
};

// Host syntax shared with the relay: lower-cases, strips one trailing dot
// and IPv6 brackets. Returns "" for something that is neither a DNS name
// (letters, digits, '-', '_', dots; optional leading "*.") nor an IP literal.
std::string NormalizeHostName(std::string_view host);
// Whether a normalised host is an IPv4 or IPv6 literal.
bool IsIpLiteral(std::string_view host);

}  // namespace sandboxd::net
