#include "daemon/net/sandbox_ca.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace sandboxd::net {
namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr ParsePem(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return X509Ptr(x);
}

X509* LeafOf(boost::asio::ssl::context& ctx) {
  return SSL_CTX_get0_certificate(ctx.native_handle());
}

// Verifies `leaf` against `ca` for `host` (name or IP) as a TLS client would.
int Verify(X509* ca, X509* leaf, const std::string& host) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
  if (IsIpLiteral(host)) {
    X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  } else {
    X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
  }
  int ok = X509_verify_cert(ctx);
  int err = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return err;
}

std::vector<std::string> PermittedDns(X509* ca, int* critical, int* excluded_ips) {
  NAME_CONSTRAINTS* nc =
      static_cast<NAME_CONSTRAINTS*>(X509_get_ext_d2i(ca, NID_name_constraints, critical, nullptr));
  std::vector<std::string> out;
  *excluded_ips = 0;
  if (!nc) return out;
  for (int i = 0; i < sk_GENERAL_SUBTREE_num(nc->permittedSubtrees); ++i) {
    GENERAL_SUBTREE* st = sk_GENERAL_SUBTREE_value(nc->permittedSubtrees, i);
    if (st->base->type == GEN_DNS) {
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(st->base->d.dNSName)),
                       ASN1_STRING_length(st->base->d.dNSName));
    } else if (st->base->type == GEN_IPADD) {
      out.emplace_back("ip/" + std::to_string(ASN1_STRING_length(st->base->d.iPAddress)));
    }
  }
  for (int i = 0; i < sk_GENERAL_SUBTREE_num(nc->excludedSubtrees); ++i) {
    if (sk_GENERAL_SUBTREE_value(nc->excludedSubtrees, i)->base->type == GEN_IPADD) ++*excluded_ips;
  }
  NAME_CONSTRAINTS_free(nc);
  return out;
}

TEST(SandboxCa, CaCertificateShape) {
  auto ca = SandboxCa::Create("sbx-1234", {"api.example.com", "*.github.com"});
  ASSERT_TRUE(ca) << ca.error().message;
  X509Ptr cert = ParsePem((*ca)->CertPem());
  ASSERT_TRUE(cert);

  BASIC_CONSTRAINTS* bc = static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(cert.get(), NID_basic_constraints, nullptr, nullptr));
  ASSERT_TRUE(bc);
  EXPECT_TRUE(bc->ca);
  ASSERT_TRUE(bc->pathlen);
  EXPECT_EQ(ASN1_INTEGER_get(bc->pathlen), 0);
  BASIC_CONSTRAINTS_free(bc);
  int bc_idx = X509_get_ext_by_NID(cert.get(), NID_basic_constraints, -1);
  EXPECT_TRUE(X509_EXTENSION_get_critical(X509_get_ext(cert.get(), bc_idx)));
  EXPECT_EQ(X509_get_key_usage(cert.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));

  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn);
  EXPECT_NE(std::string(cn).find("sandboxd"), std::string::npos);
  EXPECT_NE(std::string(cn).find("sbx-1234"), std::string::npos);

  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  EXPECT_EQ(EVP_PKEY_get_base_id(key), EVP_PKEY_EC);
  char group[64] = {};
  size_t glen = 0;
  EVP_PKEY_get_group_name(key, group, sizeof group, &glen);
  EXPECT_STREQ(group, "prime256v1");

  time_t now = std::time(nullptr);
  time_t before = now - 3500, after = now + 29L * 24 * 3600;
  EXPECT_LT(X509_cmp_time(X509_get0_notBefore(cert.get()), &before), 0);
  EXPECT_GT(X509_cmp_time(X509_get0_notAfter(cert.get()), &after), 0);
  time_t too_late = now + 31L * 24 * 3600;
  EXPECT_LT(X509_cmp_time(X509_get0_notAfter(cert.get()), &too_late), 0);

  int critical = 0, excluded_ips = 0;
  auto permitted = PermittedDns(cert.get(), &critical, &excluded_ips);
  EXPECT_EQ(critical, 1);
  EXPECT_EQ(permitted, (std::vector<std::string>{"api.example.com", "github.com"}));
  EXPECT_EQ(excluded_ips, 2);  // 0.0.0.0/0 and ::/0
}

TEST(SandboxCa, LeafVerifiesForItsHostOnly) {
  auto ca = SandboxCa::Create("sbx", {"api.example.com", "*.github.com"});
  ASSERT_TRUE(ca);
  X509Ptr ca_cert = ParsePem((*ca)->CertPem());

  auto ctx = (*ca)->ServerContextFor("API.Example.com.");
  ASSERT_TRUE(ctx) << ctx.error().message;
  X509* leaf = LeafOf(**ctx);
  EXPECT_EQ(Verify(ca_cert.get(), leaf, "api.example.com"), X509_V_OK);
  EXPECT_EQ(Verify(ca_cert.get(), leaf, "other.example.com"), X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_TRUE(X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER);
  EXPECT_EQ(X509_check_ca(leaf), 0);
  // Never outlives the CA.
  EXPECT_EQ(ASN1_TIME_compare(X509_get0_notAfter(leaf), X509_get0_notAfter(ca_cert.get())), 0);

  auto wild = (*ca)->ServerContextFor("raw.github.com");
  ASSERT_TRUE(wild) << wild.error().message;
  EXPECT_EQ(Verify(ca_cert.get(), LeafOf(**wild), "raw.github.com"), X509_V_OK);
}

TEST(SandboxCa, RefusesHostsItWasNotMadeFor) {
  auto ca = SandboxCa::Create("sbx", {"api.example.com", "*.github.com"});
  ASSERT_TRUE(ca);
  EXPECT_FALSE((*ca)->ServerContextFor("evil.com"));
  EXPECT_FALSE((*ca)->ServerContextFor("github.com"));  // "*." is for names under it
  EXPECT_FALSE((*ca)->ServerContextFor("1.2.3.4"));
  EXPECT_FALSE((*ca)->ServerContextFor(""));
  EXPECT_TRUE((*ca)->Covers("a.b.github.com"));
  EXPECT_FALSE((*ca)->Covers("xgithub.com"));
}

TEST(SandboxCa, CachesContextsPerHost) {
  auto ca = SandboxCa::Create("sbx", {"api.example.com"});
  ASSERT_TRUE(ca);
  auto a = (*ca)->ServerContextFor("api.example.com");
  auto b = (*ca)->ServerContextFor("API.EXAMPLE.COM");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->get(), b->get());
}

TEST(SandboxCa, IpHosts) {
  auto ca = SandboxCa::Create("sbx", {"10.1.2.3", "[2001:db8::1]:8443", "api.example.com"});
  ASSERT_TRUE(ca) << ca.error().message;
  X509Ptr ca_cert = ParsePem((*ca)->CertPem());
  int critical = 0, excluded_ips = 0;
  auto permitted = PermittedDns(ca_cert.get(), &critical, &excluded_ips);
  // Names and addresses are each confined to the listed ones.
  EXPECT_EQ(permitted, (std::vector<std::string>{"api.example.com", "ip/8", "ip/32"}));
  EXPECT_EQ(excluded_ips, 0);

  auto v4 = (*ca)->ServerContextFor("10.1.2.3");
  ASSERT_TRUE(v4) << v4.error().message;
  EXPECT_EQ(Verify(ca_cert.get(), LeafOf(**v4), "10.1.2.3"), X509_V_OK);
  EXPECT_NE(Verify(ca_cert.get(), LeafOf(**v4), "10.1.2.4"), X509_V_OK);
  auto v6 = (*ca)->ServerContextFor("[2001:DB8:0::1]");
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_EQ(Verify(ca_cert.get(), LeafOf(**v6), "2001:db8::1"), X509_V_OK);
  auto name = (*ca)->ServerContextFor("api.example.com");
  ASSERT_TRUE(name);
  EXPECT_EQ(Verify(ca_cert.get(), LeafOf(**name), "api.example.com"), X509_V_OK);
}

TEST(SandboxCa, RejectsBadHosts) {
  EXPECT_FALSE(SandboxCa::Create("sbx", {"exa mple.com"}));
  EXPECT_FALSE(SandboxCa::Create("sbx", {"a..b"}));
  EXPECT_FALSE(SandboxCa::Create("sbx", {"foo.*.com"}));
  EXPECT_FALSE(SandboxCa::Create("sbx", {"[not-ip]"}));
  EXPECT_TRUE(SandboxCa::Create("sbx", {}));  // no hosts: no constraints, no leaves
}

TEST(SandboxCa, NormalizeHostName) {
  EXPECT_EQ(NormalizeHostName("API.Example.COM."), "api.example.com");
  EXPECT_EQ(NormalizeHostName("[2001:DB8::0:1]"), "2001:db8::1");
  EXPECT_EQ(NormalizeHostName("2001:db8::1"), "2001:db8::1");
  EXPECT_EQ(NormalizeHostName("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(NormalizeHostName("a/b"), "");
  EXPECT_EQ(NormalizeHostName(""), "");
  EXPECT_EQ(NormalizeHostName("."), "");
}

// Leaf minting cost (printed, not asserted): key generation, signing and a
// server context, once per host per sandbox.
TEST(SandboxCaBench, LeafMinting) {
  auto ca = SandboxCa::Create("sbx", {"*.example.com"});
  ASSERT_TRUE(ca);
  constexpr int kLeaves = 200;
  std::vector<double> ms;
  for (int i = 0; i < kLeaves; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto ctx = (*ca)->ServerContextFor("h" + std::to_string(i) + ".example.com");
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_TRUE(ctx);
  }
  std::sort(ms.begin(), ms.end());
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kLeaves; ++i) ASSERT_TRUE((*ca)->ServerContextFor("h7.example.com"));
  double cached_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
      kLeaves;
  std::printf("[ sandbox ca ] leaf minting p50 %.3f ms, p99 %.3f ms; cached lookup %.2f us\n",
              ms[kLeaves / 2], ms[kLeaves * 99 / 100], cached_us);

  auto c0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(SandboxCa::Create("sbx", {"api.example.com"}));
  std::printf(
      "[ sandbox ca ] CA creation %.3f ms\n",
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count() /
          20);
}

}  // namespace
}  // namespace sandboxd::net
