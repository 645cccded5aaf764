// Small OpenSSL helpers shared by the certificate makers (the egress proxy's
// per-sandbox CA in net/sandbox_ca, the ingress's local CA in ingress/tls):
// owning pointers, error text, and the pieces of an X.509 certificate that
// OpenSSL's API makes long-winded (serials, extensions, names, name
// constraints), plus the HTTP/1.1-only ALPN choice both TLS servers make.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"

namespace sandboxd::net::x509 {

struct Free {
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(NAME_CONSTRAINTS* p) const { NAME_CONSTRAINTS_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(GENERAL_NAME* p) const { GENERAL_NAME_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(FILE* p) const { std::fclose(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

// "what: <first OpenSSL error>", draining the thread's error queue.
Error SslError(const std::string& what);

// A random positive 127-bit serial (RFC 5280: ≤ 20 octets, unpredictable).
bool SetRandomSerial(X509* x);

// Adds extension `nid` from its config-string form ("critical,CA:TRUE").
bool AddConfExt(X509* cert, X509* issuer, int nid, const char* value);

// Adds `field`=`value` (UTF-8) to a subject or issuer name.
bool AddName(X509_NAME* name, const char* field, const std::string& value);

// A dNSName GeneralName (owned by the caller), null on failure.
GENERAL_NAME* DnsName(std::string_view name);

// An iPAddress GeneralName from the binary address (4 or 16 bytes), followed
// by a mask of `mask_bits` when given (name-constraint form); null on failure.
GENERAL_NAME* IpName(const std::string& addr, int mask_bits = -1);

// Appends a subtree for `gn` (taking it, also on failure) to a name
// constraint's permitted or excluded list, creating the list if needed.
bool PushSubtree(STACK_OF(GENERAL_SUBTREE) * *stack, GENERAL_NAME* gn);

// Completes a TLS server leaf whose subject, issuer name, validity, serial
// and key are set: subjectAltName `san` (taken, also on failure), CA:FALSE,
// digitalSignature, serverAuth, key identifiers; then signs it with the
// issuing CA's key. Errors read "leaf for <host>: ...".
Status SignServerLeaf(X509* leaf, X509* ca, EVP_PKEY* ca_key, GENERAL_NAME* san,
                      const std::string& host);

// The certificate in PEM, empty on failure.
std::string PemOf(X509* cert);

// ALPN select callback: HTTP/1.1 or nothing. A client that offers only h2
// (or anything else) fails the handshake visibly; one without ALPN is served.
int SelectAlpnHttp11(SSL*, const unsigned char** out, unsigned char* outlen,
                     const unsigned char* in, unsigned int inlen, void*);

}  // namespace sandboxd::net::x509
