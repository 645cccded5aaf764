#include "daemon/ingress/tls.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <filesystem>

namespace sandboxd::ingress {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char t[] = "/tmp/ingress-tls-test-XXXXXX";
    path_ = ::mkdtemp(t);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

X509* CaOf(const TlsProvider& p) {
  BIO* b = BIO_new_mem_buf(p.ca_pem().data(), static_cast<int>(p.ca_pem().size()));
  X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  return x;
}

// Verifies the leaf of `ctx` against `ca` for `host` as a client would.
bool Verifies(X509* ca, SSL_CTX* ctx, const std::string& host) {
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* v = X509_STORE_CTX_new();
  X509_STORE_CTX_init(v, store, leaf, nullptr);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(v);
  X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  bool ok = X509_verify_cert(v) == 1;
  X509_STORE_CTX_free(v);
  X509_STORE_free(store);
  return ok;
}

TEST(IngressTls, LocalCaIsCreatedOnceAndReused) {
  TempDir d;
  auto a = TlsProvider::LocalCa(d.path(), "localhost");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ((*a)->ca_path(), d.path() + "/ingress-ca-localhost.pem");
  struct stat st {};
  ASSERT_EQ(::stat((d.path() + "/ingress-ca-localhost.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto b = TlsProvider::LocalCa(d.path(), "localhost");
  ASSERT_TRUE(b);
  EXPECT_EQ((*a)->ca_pem(), (*b)->ca_pem()) << "a restart must keep the CA users trusted";

  // Only one of the two files: refuse rather than overwrite.
  fs::remove(d.path() + "/ingress-ca-localhost.key");
  EXPECT_FALSE(TlsProvider::LocalCa(d.path(), "localhost"));
}

TEST(IngressTls, LeavesPerNameUnderTheDomainOnly) {
  TempDir d;
  auto p = TlsProvider::LocalCa(d.path(), "localhost");
  ASSERT_TRUE(p);
  X509* ca = CaOf(**p);
  const std::string name = "sbx-loc-0123456789abcdefghjk-8000.localhost";
  auto ctx = (*p)->ContextFor("SBX-LOC-0123456789ABCDEFGHJK-8000.localhost.");
  ASSERT_TRUE(ctx);
  EXPECT_TRUE(Verifies(ca, (*ctx)->native_handle(), name));
  EXPECT_FALSE(Verifies(ca, (*ctx)->native_handle(), "other.localhost"));
  auto again = (*p)->ContextFor(name);
  EXPECT_EQ(ctx->get(), again->get()) << "cached";

  // Outside the domain: the domain's own leaf, which verifies only for it.
  auto out = (*p)->ContextFor("example.com");
  ASSERT_TRUE(out);
  EXPECT_FALSE(Verifies(ca, (*out)->native_handle(), "example.com"));
  EXPECT_TRUE(Verifies(ca, (*out)->native_handle(), "localhost"));
  X509_free(ca);
}

TEST(IngressTls, CaIsNameConstrained) {
  TempDir d;
  auto p = TlsProvider::LocalCa(d.path(), "sbx.example.com");
  ASSERT_TRUE(p);
  X509* ca = CaOf(**p);
  int crit = 0;
  auto* nc =
      static_cast<NAME_CONSTRAINTS*>(X509_get_ext_d2i(ca, NID_name_constraints, &crit, nullptr));
  ASSERT_NE(nc, nullptr);
  EXPECT_EQ(crit, 1);
  ASSERT_EQ(sk_GENERAL_SUBTREE_num(nc->permittedSubtrees), 1);
  EXPECT_EQ(sk_GENERAL_SUBTREE_num(nc->excludedSubtrees), 2) << "every IPv4 and IPv6 address";
  NAME_CONSTRAINTS_free(nc);
  X509_free(ca);
}

TEST(IngressTls, FromFiles) {
  TempDir d;
  // A local CA's leaf makes a fine "configured" certificate.
  auto p = TlsProvider::LocalCa(d.path(), "localhost");
  ASSERT_TRUE(p);
  auto ctx = (*p)->ContextFor("localhost");
  ASSERT_TRUE(ctx);
  std::string cert = d.path() + "/c.pem", key = d.path() + "/k.pem";
  FILE* f = std::fopen(cert.c_str(), "w");
  PEM_write_X509(f, SSL_CTX_get0_certificate((*ctx)->native_handle()));
  std::fclose(f);
  f = std::fopen(key.c_str(), "w");
  PEM_write_PrivateKey(f, SSL_CTX_get0_privatekey((*ctx)->native_handle()), nullptr, nullptr, 0,
                       nullptr, nullptr);
  std::fclose(f);
  auto files = TlsProvider::FromFiles(cert, key);
  ASSERT_TRUE(files) << files.error().message;
  auto a = (*files)->ContextFor("x.localhost");
  auto b = (*files)->ContextFor("");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->get(), b->get());
  EXPECT_TRUE((*files)->ca_path().empty());
  EXPECT_FALSE(TlsProvider::FromFiles(cert, cert)) << "a certificate is not a key";
}

}  // namespace
}  // namespace sandboxd::ingress
