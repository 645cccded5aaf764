#include "daemon/net/x509_util.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <array>

namespace sandboxd::net::x509 {

Error SslError(const std::string& what) {
  std::string msg = what;
  if (unsigned long e = ERR_get_error(); e != 0) {
    std::array<char, 256> buf{};
    ERR_error_string_n(e, buf.data(), buf.size());
    msg += ": ";
    msg += buf.data();
  }
  ERR_clear_error();
  return Error::Msg(std::move(msg));
}

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

GENERAL_NAME* IpName(const std::string& addr, int mask_bits) {
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

Status SignServerLeaf(X509* l, X509* ca, EVP_PKEY* ca_key, GENERAL_NAME* gn,
                      const std::string& host) {
  Ptr<GENERAL_NAMES> san(sk_GENERAL_NAME_new_null());
  if (!san || !gn || sk_GENERAL_NAME_push(san.get(), gn) == 0) {
    GENERAL_NAME_free(gn);
    return Fail(SslError("leaf for " + host + ": SAN"));
  }
  if (X509_add1_ext_i2d(l, NID_subject_alt_name, san.get(), 0, X509V3_ADD_DEFAULT) != 1 ||
      !AddConfExt(l, ca, NID_basic_constraints, "critical,CA:FALSE") ||
      !AddConfExt(l, ca, NID_key_usage, "critical,digitalSignature") ||
      !AddConfExt(l, ca, NID_ext_key_usage, "serverAuth") ||
      !AddConfExt(l, ca, NID_subject_key_identifier, "hash") ||
      !AddConfExt(l, ca, NID_authority_key_identifier, "keyid:always")) {
    return Fail(SslError("leaf for " + host + ": extensions"));
  }
  if (X509_sign(l, ca_key, EVP_sha256()) == 0)
    return Fail(SslError("leaf for " + host + ": signing"));
  return {};
}

std::string PemOf(X509* cert) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return {};
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

int SelectAlpnHttp11(SSL*, const unsigned char** out, unsigned char* outlen,
                     const unsigned char* in, unsigned int inlen, void*) {
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

}  // namespace sandboxd::net::x509
