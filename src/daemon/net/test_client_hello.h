// For tests and benchmarks: the ClientHello OpenSSL's client writes for a
// server name, as the first bytes of a TLS connection.
#pragma once

#include <openssl/ssl.h>

#include <string>

namespace sandboxd::net {

// `sni` null: no server name extension. `tls13_only`: a TLS 1.3-only hello.
inline std::string TestClientHello(const char* sni, bool tls13_only = false) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (tls13_only) SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL* ssl = SSL_new(ctx);
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, BIO_new(BIO_s_mem()), wbio);
  if (sni) SSL_set_tlsext_host_name(ssl, sni);
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);  // writes the hello, then wants the server's answer
  char* data = nullptr;
  long n = BIO_get_mem_data(wbio, &data);
  std::string out(data, static_cast<size_t>(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return out;
}

}  // namespace sandboxd::net
