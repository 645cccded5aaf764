#include "daemon/net/tls_contexts.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>

#include "daemon/net/sandbox_ca.h"
#include "daemon/net/x509_util.h"

namespace sandboxd::net {

namespace ssl = boost::asio::ssl;

using x509::SslError;

Result<std::shared_ptr<ssl::context>> MakeUpstreamClientContext(
    const std::vector<std::string>& extra_ca_files) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* h = ctx->native_handle();
  SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
  SSL_CTX_set_options(h, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  boost::system::error_code ec;
  ctx->set_default_verify_paths(ec);
  if (ec) return FailMsg("upstream TLS: default CA paths: " + ec.message());
  for (const auto& f : extra_ca_files) {
    ctx->load_verify_file(f, ec);
    if (ec) return FailMsg("upstream TLS: extra CA file " + f + ": " + ec.message());
  }
  ctx->set_verify_mode(ssl::verify_peer);
  static constexpr unsigned char kAlpn[] = "\x08http/1.1";
  if (SSL_CTX_set_alpn_protos(h, kAlpn, sizeof kAlpn - 1) != 0)
    return Fail(SslError("upstream TLS: ALPN"));
  return ctx;
}

Status PrepareUpstreamTls(ssl::stream<boost::beast::tcp_stream>& stream, std::string_view host) {
  SSL* s = stream.native_handle();
  std::string h(host);
  if (IsIpLiteral(h)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), h.c_str()) != 1) {
      return Fail(SslError("upstream TLS: verify IP " + h));
    }
    return {};
  }
  if (SSL_set_tlsext_host_name(s, h.c_str()) != 1) return Fail(SslError("upstream TLS: SNI " + h));
  SSL_set_hostflags(s, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(s, h.c_str()) != 1) return Fail(SslError("upstream TLS: verify host " + h));
  return {};
}

}  // namespace sandboxd::net
