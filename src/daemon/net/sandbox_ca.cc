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

namespace sandboxd::net {

namespace ssl = boost::asio::ssl;

namespace {

constexpr long kSkewSeconds = 3600;
constexpr long kValiditySeconds = 30L * 24 * 3600;

struct Free {
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(NAME_CONSTRAINTS* p) const { NAME_CONSTRAINTS_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(GENERAL_NAME* p) const { GENERAL_NAME_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

// "what: <first OpenSSL error>", draining the thread's error queue.
Error SslError(const std::string& what) {
  std::string msg = what;
  unsigned long e = ERR_get_error();
  if (e != 0) {
    std::array<char, 256> buf{};
    ERR_error_string_n(e, buf.data(), buf.size());
    msg += ": ";
    msg += buf.data();
  }
  ERR_clear_error();
  return Error::Msg(std::move(msg));
}

Ptr<EVP_PKEY> NewP256Key() { return Ptr<EVP_PKEY>(EVP_EC_gen("P-256")); }

// A random positive 127-bit serial (RFC 5280: ≤ 20 octets, unpredictable).
bool SetRandomSerial(X509* x) {
  std::array<unsigned char, 16> b{};
  if (RAND_bytes(b.data(), b.size()) != 1) return false;
  b[0] = static_cast<unsigned char>((b[0] & 0x7f) | 0x40);  // positive, full 16 octets
  Ptr<BIGNUM> bn(BN_bin2bn(b.data(), b.size(), nullptr));
  return bn && BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x)) != nullptr;
}

bool AddConfExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ptr<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

bool AddName(X509_NAME* name, const char* field, const std::string& value) {
  return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(value.data()),
                                    static_cast<int>(value.size()), -1, 0) == 1;
}

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

GENERAL_NAME* DnsName(std::string_view name) {
  Ptr<GENERAL_NAME> gn(GENERAL_NAME_new());
  ASN1_IA5STRING* s = ASN1_IA5STRING_new();
  if (!gn || !s || ASN1_STRING_set(s, name.data(), static_cast<int>(name.size())) != 1) {
    ASN1_IA5STRING_free(s);
    return nullptr;
  }
  GENERAL_NAME_set0_value(gn.get(), GEN_DNS, s);
  return gn.release();
}

// An iPAddress GeneralName: the address, followed by a mask when `mask_bits`
// is given (name-constraint form).
GENERAL_NAME* IpName(const std::string& addr, int mask_bits = -1) {
  std::string bytes = addr;
  if (mask_bits >= 0) {
    std::string mask(addr.size(), '\0');
    for (int i = 0; i < mask_bits; ++i)
      mask[i / 8] = static_cast<char>(mask[i / 8] | (0x80 >> (i % 8)));
    bytes += mask;
  }
  Ptr<GENERAL_NAME> gn(GENERAL_NAME_new());
  ASN1_OCTET_STRING* s = ASN1_OCTET_STRING_new();
  if (!gn || !s ||
      ASN1_OCTET_STRING_set(s, reinterpret_cast<const unsigned char*>(bytes.data()),
                            static_cast<int>(bytes.size())) != 1) {
    ASN1_OCTET_STRING_free(s);
    return nullptr;
  }
  GENERAL_NAME_set0_value(gn.get(), GEN_IPADD, s);
  return gn.release();
}

bool PushSubtree(STACK_OF(GENERAL_SUBTREE) * *stack, GENERAL_NAME* gn) {
  if (!gn) return false;
  if (!*stack) *stack = sk_GENERAL_SUBTREE_new_null();
  GENERAL_SUBTREE* st = GENERAL_SUBTREE_new();
  if (!*stack || !st) {
    GENERAL_NAME_free(gn);
    GENERAL_SUBTREE_free(st);
    return false;
  }
  GENERAL_NAME_free(st->base);
  st->base = gn;
  if (sk_GENERAL_SUBTREE_push(*stack, st) == 0) {
    GENERAL_SUBTREE_free(st);
    return false;
  }
  return true;
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

std::string PemOf(X509* cert) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return {};
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// ALPN: HTTP/1.1 or nothing. The relay speaks only HTTP/1.1; a client that
// can only do h2 (or anything else) fails the handshake visibly.
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  static constexpr std::string_view kHttp11 = "http/1.1";
  for (unsigned int i = 0; i < inlen;) {
    unsigned int len = in[i];
    if (i + 1 + len > inlen) break;
    if (std::string_view(reinterpret_cast<const char*>(in + i + 1), len) == kHttp11) {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
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

  Ptr<GENERAL_NAMES> san(sk_GENERAL_NAME_new_null());
  GENERAL_NAME* gn = ip ? IpName(IpBytes(host)) : DnsName(host);
  if (!san || !gn || sk_GENERAL_NAME_push(san.get(), gn) == 0) {
    GENERAL_NAME_free(gn);
    return Fail(SslError("leaf for " + host + ": SAN"));
  }
  if (X509_add1_ext_i2d(l, NID_subject_alt_name, san.get(), 0, X509V3_ADD_DEFAULT) != 1 ||
      !AddConfExt(l, cert_, NID_basic_constraints, "critical,CA:FALSE") ||
      !AddConfExt(l, cert_, NID_key_usage, "critical,digitalSignature") ||
      !AddConfExt(l, cert_, NID_ext_key_usage, "serverAuth") ||
      !AddConfExt(l, cert_, NID_subject_key_identifier, "hash") ||
      !AddConfExt(l, cert_, NID_authority_key_identifier, "keyid:always")) {
    return Fail(SslError("leaf for " + host + ": extensions"));
  }
  if (X509_sign(l, key_, EVP_sha256()) == 0)
    return Fail(SslError("leaf for " + host + ": signing"));

  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* h = ctx->native_handle();
  SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
  SSL_CTX_set_options(
      h, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate(h, l) != 1 || SSL_CTX_use_PrivateKey(h, key.get()) != 1 ||
      SSL_CTX_check_private_key(h) != 1 || SSL_CTX_add1_chain_cert(h, cert_) != 1) {
    return Fail(SslError("leaf for " + host + ": server context"));
  }
  SSL_CTX_set_alpn_select_cb(h, SelectAlpn, nullptr);
  return ctx;
}

}  // namespace sandboxd::net
