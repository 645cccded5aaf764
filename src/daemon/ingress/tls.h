// TLS for the ingress listener, from one of two sources:
//   - certificate files the operator configured (a chain and its key, e.g.
//     a wildcard for *.sbx.example.com), presented for every name;
//   - a local CA the daemon creates once in its data dir and reuses on
//     every start. Its certificate is what users add to their trust store;
//     it is name-constrained (critical) to the ingress domain and excludes
//     every IP address, so trusting it vouches for nothing else. Leaves are
//     minted per SNI name on first use (a wildcard "*.localhost" is refused
//     by verifiers, since it sits right under a top-level name).
// ALPN: selects http/1.1; a client offering only other protocols (h2 only)
// fails the handshake visibly rather than speaking h2 to an HTTP/1 relay.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/error.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_st X509;

namespace sandboxd::ingress {

// Thread-safe; contexts handed out are immutable and shared.
class TlsProvider {
 public:
  static Result<std::shared_ptr<TlsProvider>> FromFiles(const std::string& cert_chain_file,
                                                        const std::string& key_file);
  // Loads <dir>/ingress-ca-<domain>.{pem,key}, or creates them (key 0600)
  // when neither exists. A CA past its validity is replaced.
  static Result<std::shared_ptr<TlsProvider>> LocalCa(const std::string& dir,
                                                      const std::string& domain);
  ~TlsProvider();
  TlsProvider(const TlsProvider&) = delete;
  TlsProvider& operator=(const TlsProvider&) = delete;

  // The context for a handshake whose SNI is `sni` ("" when absent). With
  // the local CA: a leaf for `sni` when it is the domain or under it, else
  // for the domain itself (the client will not accept it, as it should not).
  Result<std::shared_ptr<boost::asio::ssl::context>> ContextFor(std::string_view sni);

  // The local CA's certificate file ("" for configured files).
  const std::string& ca_path() const { return ca_path_; }
  // The local CA's certificate (PEM; "" for configured files).
  const std::string& ca_pem() const { return ca_pem_; }

 private:
  TlsProvider() = default;
  Result<std::shared_ptr<boost::asio::ssl::context>> Mint(const std::string& host);

  std::shared_ptr<boost::asio::ssl::context> fixed_;  // configured files
  std::string domain_;
  EVP_PKEY* key_ = nullptr;  // the local CA's
  X509* cert_ = nullptr;
  std::string ca_path_, ca_pem_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<boost::asio::ssl::context>> leaves_;  // guarded by mu_
};

}  // namespace sandboxd::ingress
