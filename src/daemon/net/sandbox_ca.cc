#include "daemon/net/sandbox_ca.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "daemon/net/x509_util.h"

namespace sandboxd::net {

namespace ssl = boost::asio::ssl;

namespace {

constexpr long kSkewSeconds = 3600;
constexpr long kValiditySeconds = 30L * 24 * 3600;

using x509::AddConfExt;
using x509::AddName;
using x509::DnsName;
using x509::IpName;
using x509::PemOf;
using x509::Ptr;
using x509::PushSubtree;
using x509::SetRandomSerial;
using x509::SslError;

Ptr<EVP_PKEY> NewP256Key() { return Ptr<EVP_PKEY>(EVP_EC_gen("P-256")); }

// The binary form of an IP literal (4 or 16 bytes), empty if not one.
std::string IpBytes(std::string_view host) {
  std::string s(host);
  std::array<unsigned char, 16> b{};
  if (inet_pton(AF_INET, s.c_str(), b.data()) == 1)
    return std::string(reinterpret_cast<char*>(b.data()), 4);
  if (inet_pton(AF_INET6, s.c_str(), b.data()) == 1)
    return std::string(reinterpret_cast<char*>(b.data()), 16);
  return {};
}

// Strips a ":port" suffix: "h:443" → "h", "[::1]:443" → "[::1]"; a bare
// IPv6 literal (two or more colons, no brackets) is left alone.
std::string_view StripPort(std::string_view h) {
  if (h.starts_with('[')) {
    size_t close = h.find(']');
    return close == std::string_view::npos ? h : h.substr(0, close + 1);
  }
  size_t colon = h.find(':');
  if (colon != std::string_view::npos && h.find(':', colon + 1) == std::string_view::npos) {
    return h.substr(0, colon);
  }
  return h;
}

}  // namespace

bool IsIpLiteral(std::string_view host) { return !IpBytes(host).empty(); }

std::string NormalizeHostName(std::string_view host) {
  if (host.starts_with('[')) {
    if (!host.ends_with(']')) return {};
    host = host.substr(1, host.size() - 2);
    std::string bytes = IpBytes(host);
    if (bytes.size() != 16) return {};
    std::array<char, INET6_ADDRSTRLEN> buf{};
    inet_ntop(AF_INET6, bytes.data(), buf.data(), buf.size());
    return buf.data();
  }
  if (host.find(':') != std::string_view::npos) {
    std::string bytes = IpBytes(host);
    if (bytes.size() != 16) return {};
    std::array<char, INET6_ADDRSTRLEN> buf{};
    inet_ntop(AF_INET6, bytes.data(), buf.data(), buf.size());
    return buf.data();
  }
  if (host.ends_with('.')) host.remove_suffix(1);
  if (host.empty() || host.size() > 253) return {};
  std::string out;
  out.reserve(host.size());
  size_t label = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    char c = host[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (c == '*' && i == 0 && host.size() > 2 && host[1] == '.') ok = true;
    if (c == '.') {
      if (label == 0) return {};
      label = 0;
    } else {
      if (!ok || ++label > 63) return {};
    }
    out.push_back(c);
  }
  if (label == 0) return {};
  return out;  // a dotted IPv4 literal passes as is (inet_pton takes only canonical quads)
}

Result<std::shared_ptr<SandboxCa>> SandboxCa::Create(std::string_view sandbox_id,
                                                     const std::vector<std::string>& hosts) {
  std::shared_ptr<SandboxCa> ca(new SandboxCa());
  for (const auto& raw : hosts) {
    std::string h = NormalizeHostName(StripPort(raw));
    if (h.empty()) return FailMsg("sandbox CA: bad host \"" + raw + "\"");
    auto& list = IsIpLiteral(h) ? ca->ips_ : ca->dns_;
    if (std::find(list.begin(), list.end(), h) == list.end()) list.push_back(h);
  }

  Ptr<EVP_PKEY> key = NewP256Key();
  Ptr<X509> cert(X509_new());
  if (!key || !cert) return Fail(SslError("sandbox CA: key"));
  X509_set_version(cert.get(), 2);
  if (!SetRandomSerial(cert.get())) return Fail(SslError("sandbox CA: serial"));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kSkewSeconds);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValiditySeconds);
  X509_set_pubkey(cert.get(), key.get());

  // CN is at most 64 characters.
  std::string cn = "sandboxd sandbox CA " + std::string(sandbox_id.substr(0, 40));
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (!AddName(name, "O", "sandboxd") || !AddName(name, "CN", cn))
    return Fail(SslError("sandbox CA: name"));
  X509_set_issuer_name(cert.get(), name);

  X509* c = cert.get();
  if (!AddConfExt(c, c, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !AddConfExt(c, c, NID_key_usage, "critical,keyCertSign,cRLSign") ||
      !AddConfExt(c, c, NID_subject_key_identifier, "hash") ||
      !AddConfExt(c, c, NID_authority_key_identifier, "keyid:always")) {
    return Fail(SslError("sandbox CA: extensions"));
  }

  if (!ca->dns_.empty() || !ca->ips_.empty()) {
    Ptr<NAME_CONSTRAINTS> nc(NAME_CONSTRAINTS_new());
    if (!nc) return Fail(SslError("sandbox CA: name constraints"));
    bool ok = true;
    for (const auto& d : ca->dns_) {
      // "*.example.com" → subtree "example.com" (it and every name under it;
      // the leading-dot form is not understood by every verifier).
      std::string_view base = d;
      if (base.starts_with("*.")) base.remove_prefix(2);
      ok = ok && PushSubtree(&nc->permittedSubtrees, DnsName(base));
    }
    for (const auto& ip : ca->ips_) {
      std::string b = IpBytes(ip);
      ok = ok && PushSubtree(&nc->permittedSubtrees, IpName(b, static_cast<int>(b.size() * 8)));
    }
    if (ca->ips_.empty()) {
      // Permitted dNSName subtrees say nothing about iPAddress SANs: exclude
      // every address so the CA cannot vouch for an IP either.
      ok = ok && PushSubtree(&nc->excludedSubtrees, IpName(std::string(4, '\0'), 0));
      ok = ok && PushSubtree(&nc->excludedSubtrees, IpName(std::string(16, '\0'), 0));
    }
    if (!ok || X509_add1_ext_i2d(c, NID_name_constraints, nc.get(), 1, X509V3_ADD_DEFAULT) != 1) {
      return Fail(SslError("sandbox CA: name constraints"));
    }
  }

  if (X509_sign(c, key.get(), EVP_sha256()) == 0) return Fail(SslError("sandbox CA: signing"));
  ca->cert_pem_ = PemOf(c);
  if (ca->cert_pem_.empty()) return Fail(SslError("sandbox CA: PEM"));
  ca->key_ = key.release();
  ca->cert_ = cert.release();
  return ca;
}

SandboxCa::~SandboxCa() {
  X509_free(cert_);
  EVP_PKEY_free(key_);
}

bool SandboxCa::Covers(std::string_view host) const {
  std::string h = NormalizeHostName(host);
  if (h.empty() || h.starts_with("*.")) return false;
  if (IsIpLiteral(h)) return std::find(ips_.begin(), ips_.end(), h) != ips_.end();
  for (const auto& d : dns_) {
    if (d == h) return true;
    if (d.starts_with("*.")) {
      std::string_view suffix = std::string_view(d).substr(1);  // ".example.com"
      if (h.size() > suffix.size() && std::string_view(h).ends_with(suffix)) return true;
    }
  }
  return false;
}

Result<std::shared_ptr<ssl::context>> SandboxCa::ServerContextFor(std::string_view host) {
  std::string h = NormalizeHostName(host);
  if (h.empty() || !Covers(h)) {
    return FailMsg("sandbox CA: no leaf for \"" + std::string(host) + "\": not a secret host");
  }
  {
    std::lock_guard lock(mu_);
    if (auto it = leaves_.find(h); it != leaves_.end()) return it->second;
  }
  // Minted outside the lock; two threads racing on a new host both mint
  // and the first to insert wins (both contexts are valid).
  auto ctx = Mint(h);
  if (!ctx) return ctx;
  std::lock_guard lock(mu_);
  return leaves_.emplace(h, std::move(*ctx)).first->second;
}

Result<std::shared_ptr<ssl::context>> SandboxCa::Mint(const std::string& host) {
  Ptr<EVP_PKEY> key = NewP256Key();
  Ptr<X509> leaf(X509_new());
  if (!key || !leaf) return Fail(SslError("leaf for " + host + ": key"));
  X509* l = leaf.get();
  X509_set_version(l, 2);
  if (!SetRandomSerial(l)) return Fail(SslError("leaf for " + host + ": serial"));
  // Exactly the CA's window: never outlives the CA.
  X509_set1_notBefore(l, X509_get0_notBefore(cert_));
  X509_set1_notAfter(l, X509_get0_notAfter(cert_));
  X509_set_pubkey(l, key.get());

  bool ip = IsIpLiteral(host);
  X509_NAME* name = X509_get_subject_name(l);
  // An IP leaf carries no CN: OpenSSL would check a hostname-looking CN
  // against the dNSName constraints.
  if (!AddName(name, "O", "sandboxd intercept") || (!ip && !AddName(name, "CN", host))) {
    return Fail(SslError("leaf for " + host + ": name"));
  }
  X509_set_issuer_name(l, X509_get_subject_name(cert_));

  SBX_TRY(x509::SignServerLeaf(l, cert_, key_, ip ? IpName(IpBytes(host)) : DnsName(host), host));

  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* h = ctx->native_handle();
  SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
  SSL_CTX_set_options(
      h, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate(h, l) != 1 || SSL_CTX_use_PrivateKey(h, key.get()) != 1 ||
      SSL_CTX_check_private_key(h) != 1 || SSL_CTX_add1_chain_cert(h, cert_) != 1) {
    return Fail(SslError("leaf for " + host + ": server context"));
  }
  SSL_CTX_set_alpn_select_cb(h, x509::SelectAlpnHttp11, nullptr);
  return ctx;
}

}  // namespace sandboxd::net
