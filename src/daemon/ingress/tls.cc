#include "daemon/ingress/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "daemon/net/x509_util.h"

namespace sandboxd::ingress {

namespace ssl = boost::asio::ssl;

namespace {

constexpr long kSkewSeconds = 3600;
constexpr long kCaValiditySeconds = 10L * 365 * 24 * 3600;
constexpr long kLeafValiditySeconds = 397L * 24 * 3600;  // what browsers accept for a leaf
constexpr size_t kMaxCachedLeaves = 4096;

using net::x509::AddConfExt;
using net::x509::AddName;
using net::x509::DnsName;
using net::x509::IpName;
using net::x509::PemOf;
using net::x509::Ptr;
using net::x509::PushSubtree;
using net::x509::SetRandomSerial;
using net::x509::SslError;

// All addresses of one family (address 0, mask 0), name-constraint form.
GENERAL_NAME* AnyIp(size_t len) { return IpName(std::string(len, '\0'), 0); }

std::shared_ptr<ssl::context> NewServerContext() {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* h = ctx->native_handle();
  SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
  SSL_CTX_set_options(
      h, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_alpn_select_cb(h, net::x509::SelectAlpnHttp11, nullptr);
  return ctx;
}

// Writes `data` to `path` with `mode`, atomically (temp file + rename).
Status WriteFileAtomic(const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return FailErrno("create " + tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return FailErrno("write " + tmp, e);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return FailErrno("write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return FailErrno("rename " + tmp);
  return {};
}

Result<std::string> KeyPem(EVP_PKEY* key) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Fail(SslError("ingress CA: key PEM"));
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// A new CA for `domain`: EC P-256, CA:TRUE pathlen 0, name-constrained.
Status CreateCa(const std::string& domain, Ptr<EVP_PKEY>& key, Ptr<X509>& cert) {
  key.reset(EVP_EC_gen("P-256"));
  cert.reset(X509_new());
  if (!key || !cert) return Fail(SslError("ingress CA: key"));
  X509* c = cert.get();
  X509_set_version(c, 2);
  if (!SetRandomSerial(c)) return Fail(SslError("ingress CA: serial"));
  X509_gmtime_adj(X509_getm_notBefore(c), -kSkewSeconds);
  X509_gmtime_adj(X509_getm_notAfter(c), kCaValiditySeconds);
  X509_set_pubkey(c, key.get());
  // A random tag tells this host's CA from others with the same domain.
  std::array<unsigned char, 4> tag{};
  RAND_bytes(tag.data(), tag.size());
  char hex[9];
  std::snprintf(hex, sizeof hex, "%02x%02x%02x%02x", tag[0], tag[1], tag[2], tag[3]);
  std::string cn = "sandboxd ingress CA " + std::string(hex) + " " + domain.substr(0, 30);
  X509_NAME* name = X509_get_subject_name(c);
  if (!AddName(name, "O", "sandboxd") || !AddName(name, "CN", cn))
    return Fail(SslError("ingress CA: name"));
  X509_set_issuer_name(c, name);
  if (!AddConfExt(c, c, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !AddConfExt(c, c, NID_key_usage, "critical,keyCertSign,cRLSign") ||
      !AddConfExt(c, c, NID_subject_key_identifier, "hash") ||
      !AddConfExt(c, c, NID_authority_key_identifier, "keyid:always")) {
    return Fail(SslError("ingress CA: extensions"));
  }
  Ptr<NAME_CONSTRAINTS> nc(NAME_CONSTRAINTS_new());
  // The domain and every name under it; no IP address at all.
  bool ok = nc && PushSubtree(&nc->permittedSubtrees, DnsName(domain)) &&
            PushSubtree(&nc->excludedSubtrees, AnyIp(4)) &&
            PushSubtree(&nc->excludedSubtrees, AnyIp(16));
  if (!ok || X509_add1_ext_i2d(c, NID_name_constraints, nc.get(), 1, X509V3_ADD_DEFAULT) != 1) {
    return Fail(SslError("ingress CA: name constraints"));
  }
  if (X509_sign(c, key.get(), EVP_sha256()) == 0) return Fail(SslError("ingress CA: signing"));
  return {};
}

Status LoadCa(const std::string& cert_path, const std::string& key_path, Ptr<EVP_PKEY>& key,
              Ptr<X509>& cert) {
  Ptr<FILE> cf(std::fopen(cert_path.c_str(), "re"));
  if (!cf) return FailErrno("open " + cert_path);
  cert.reset(PEM_read_X509(cf.get(), nullptr, nullptr, nullptr));
  if (!cert) return Fail(SslError("read " + cert_path));
  Ptr<FILE> kf(std::fopen(key_path.c_str(), "re"));
  if (!kf) return FailErrno("open " + key_path);
  key.reset(PEM_read_PrivateKey(kf.get(), nullptr, nullptr, nullptr));
  if (!key) return Fail(SslError("read " + key_path));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return Fail(SslError(key_path + " is not the key of " + cert_path));
  }
  return {};
}

}  // namespace

TlsProvider::~TlsProvider() {
  X509_free(cert_);
  EVP_PKEY_free(key_);
}

Result<std::shared_ptr<TlsProvider>> TlsProvider::FromFiles(const std::string& cert_chain_file,
                                                            const std::string& key_file) {
  std::shared_ptr<TlsProvider> p(new TlsProvider());
  p->fixed_ = NewServerContext();
  SSL_CTX* h = p->fixed_->native_handle();
  if (SSL_CTX_use_certificate_chain_file(h, cert_chain_file.c_str()) != 1) {
    return Fail(SslError("ingress TLS certificate " + cert_chain_file));
  }
  if (SSL_CTX_use_PrivateKey_file(h, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return Fail(SslError("ingress TLS key " + key_file));
  }
  if (SSL_CTX_check_private_key(h) != 1)
    return Fail(SslError(key_file + " does not match " + cert_chain_file));
  return p;
}

Result<std::shared_ptr<TlsProvider>> TlsProvider::LocalCa(const std::string& dir,
                                                          const std::string& domain) {
  std::shared_ptr<TlsProvider> p(new TlsProvider());
  p->domain_ = domain;
  std::string base = dir + "/ingress-ca-" + domain;
  std::string cert_path = base + ".pem", key_path = base + ".key";
  namespace fs = std::filesystem;
  std::error_code ec;
  bool have_cert = fs::exists(cert_path, ec), have_key = fs::exists(key_path, ec);
  Ptr<EVP_PKEY> key;
  Ptr<X509> cert;
  bool create = !have_cert && !have_key;
  if (have_cert != have_key) {
    return FailMsg("ingress CA: found only one of " + cert_path + " and " + key_path +
                   " (remove it to create a new CA)");
  }
  if (!create) {
    SBX_TRY(LoadCa(cert_path, key_path, key, cert));
    // Replace a CA that expires within a day (leaves never outlive it).
    time_t soon = ::time(nullptr) + 24 * 3600;
    if (X509_cmp_time(X509_get0_notAfter(cert.get()), &soon) <= 0) create = true;
  }
  if (create) {
    SBX_TRY(CreateCa(domain, key, cert));
    auto key_pem = KeyPem(key.get());
    if (!key_pem) return std::unexpected(key_pem.error());
    std::string cert_pem = PemOf(cert.get());
    if (cert_pem.empty()) return Fail(SslError("ingress CA: PEM"));
    // Key first: a certificate without its key would block the next start.
    SBX_TRY(WriteFileAtomic(key_path, *key_pem, 0600));
    SBX_TRY(WriteFileAtomic(cert_path, cert_pem, 0644));
  }
  p->ca_pem_ = PemOf(cert.get());
  p->ca_path_ = cert_path;
  p->key_ = key.release();
  p->cert_ = cert.release();
  return p;
}

Result<std::shared_ptr<ssl::context>> TlsProvider::ContextFor(std::string_view sni) {
  if (fixed_) return fixed_;
  std::string host;
  for (char c : sni) host.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  if (host.ends_with('.')) host.pop_back();
  bool under = host == domain_ || (host.size() > domain_.size() + 1 && host.ends_with(domain_) &&
                                   host[host.size() - domain_.size() - 1] == '.');
  bool valid =
      under && host.size() <= 253 && std::all_of(host.begin(), host.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
      });
  if (!valid) host = domain_;
  {
    std::lock_guard lock(mu_);
    if (auto it = leaves_.find(host); it != leaves_.end()) return it->second;
  }
  auto ctx = Mint(host);
  if (!ctx) return ctx;
  std::lock_guard lock(mu_);
  if (leaves_.size() >= kMaxCachedLeaves) leaves_.clear();  // names come and go with sandboxes
  return leaves_.emplace(host, std::move(*ctx)).first->second;
}

Result<std::shared_ptr<ssl::context>> TlsProvider::Mint(const std::string& host) {
  Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  Ptr<X509> leaf(X509_new());
  if (!key || !leaf) return Fail(SslError("leaf for " + host + ": key"));
  X509* l = leaf.get();
  X509_set_version(l, 2);
  if (!SetRandomSerial(l)) return Fail(SslError("leaf for " + host + ": serial"));
  X509_gmtime_adj(X509_getm_notBefore(l), -kSkewSeconds);
  X509_gmtime_adj(X509_getm_notAfter(l), kLeafValiditySeconds);
  if (ASN1_TIME_compare(X509_get0_notAfter(l), X509_get0_notAfter(cert_)) > 0) {
    X509_set1_notAfter(l, X509_get0_notAfter(cert_));  // never outlives the CA
  }
  X509_set_pubkey(l, key.get());
  X509_NAME* name = X509_get_subject_name(l);
  if (!AddName(name, "O", "sandboxd ingress") ||
      (host.size() <= 64 && !AddName(name, "CN", host))) {
    return Fail(SslError("leaf for " + host + ": name"));
  }
  X509_set_issuer_name(l, X509_get_subject_name(cert_));
  SBX_TRY(net::x509::SignServerLeaf(l, cert_, key_, DnsName(host), host));
  auto ctx = NewServerContext();
  SSL_CTX* h = ctx->native_handle();
  if (SSL_CTX_use_certificate(h, l) != 1 || SSL_CTX_use_PrivateKey(h, key.get()) != 1 ||
      SSL_CTX_check_private_key(h) != 1 || SSL_CTX_add1_chain_cert(h, cert_) != 1) {
    return Fail(SslError("leaf for " + host + ": server context"));
  }
  return ctx;
}

}  // namespace sandboxd::ingress
