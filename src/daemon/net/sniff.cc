#include "daemon/net/sniff.h"

#include <openssl/ssl.h>
#include <openssl/tls1.h>

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http.hpp>
#include <memory>

namespace sandboxd::net {
namespace {

namespace http = boost::beast::http;

struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

struct HelloSeen {
  bool seen = false;
  std::string sni;
};

// Runs inside SSL_do_handshake once OpenSSL has parsed a whole ClientHello
// (across records and segments); we read the SNI and stop the handshake
// there. OpenSSL does the parsing, so a hostile hello meets a well-tested
// parser rather than ours.
int OnClientHello(SSL* ssl, int* /*alert*/, void* /*arg*/) {
  auto* seen = static_cast<HelloSeen*>(SSL_get_app_data(ssl));
  seen->seen = true;
  const unsigned char* p = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) == 1 && len >= 5) {
    // server_name_list: u16 length, then entries {u8 type, u16 length, name}.
    size_t list = (size_t{p[0]} << 8) | p[1];
    if (list + 2 <= len && p[2] == TLSEXT_NAMETYPE_host_name) {
      size_t n = (size_t{p[3]} << 8) | p[4];
      if (5 + n <= len) seen->sni.assign(reinterpret_cast<const char*>(p + 5), n);
    }
  }
  return SSL_CLIENT_HELLO_RETRY;  // suspend: we only wanted to look
}

SSL_CTX* SniffContext() {
  static SSL_CTX* ctx = [] {
    SSL_CTX* c = SSL_CTX_new(TLS_server_method());
    // Accept every version's hello for sniffing; the real handshake (if we
    // terminate TLS) uses its own context and policy.
    SSL_CTX_set_min_proto_version(c, 0);
    SSL_CTX_set_client_hello_cb(c, OnClientHello, nullptr);
    return c;
  }();
  return ctx;
}

Sniffed SniffTls(std::string_view bytes) {
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(SniffContext()));
  if (!ssl) return {Sniffed::kUnknown, {}};
  BIO* rbio = BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()));
  BIO_set_mem_eof_return(rbio, -1);  // the end of what we have is "retry", not EOF
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), rbio, wbio);  // ssl owns both
  HelloSeen seen;
  SSL_set_app_data(ssl.get(), &seen);
  SSL_set_accept_state(ssl.get());
  int rc = SSL_do_handshake(ssl.get());
  if (seen.seen) return {Sniffed::kTls, std::move(seen.sni)};
  int err = SSL_get_error(ssl.get(), rc);
  // A memory BIO at its end reads as "retry": the hello is incomplete.
  if (err == SSL_ERROR_WANT_READ && bytes.size() < kMaxSniffBytes) return {Sniffed::kNeedMore, {}};
  return {Sniffed::kUnknown, {}};
}

// A request line starts with a method token (upper-case letters) and a space.
enum class Method { kYes, kNo, kMaybe };
Method StartsWithMethod(std::string_view b) {
  size_t i = 0;
  while (i < b.size() && i < 16 && b[i] >= 'A' && b[i] <= 'Z') ++i;
  if (i == b.size() && i < 16) return Method::kMaybe;
  return i > 0 && i < b.size() && b[i] == ' ' ? Method::kYes : Method::kNo;
}

Sniffed SniffHttp(std::string_view bytes) {
  if (bytes.find("\r\n\r\n") == std::string_view::npos) {
    if (bytes.size() >= kMaxSniffBytes) return {Sniffed::kUnknown, {}};
    return {Sniffed::kNeedMore, {}};
  }
  http::request_parser<http::empty_body> parser;
  parser.eager(false);
  parser.header_limit(kMaxSniffBytes);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
  if (ec || !parser.is_header_done()) return {Sniffed::kUnknown, {}};
  const auto& req = parser.get();
  auto it = req.find(http::field::host);
  return {Sniffed::kHttp, it == req.end() ? std::string() : std::string(it->value())};
}

}  // namespace

Sniffed Sniff(std::string_view bytes) {
  if (bytes.empty()) return {Sniffed::kNeedMore, {}};
  // TLS handshake record: content type 22, then major version 3.
  if (static_cast<unsigned char>(bytes[0]) == 0x16) {
    if (bytes.size() >= 2 && bytes[1] != 0x03) return {Sniffed::kUnknown, {}};
    return SniffTls(bytes);
  }
  switch (StartsWithMethod(bytes)) {
    case Method::kMaybe: return {Sniffed::kNeedMore, {}};
    case Method::kNo: return {Sniffed::kUnknown, {}};
    case Method::kYes: break;
  }
  return SniffHttp(bytes);
}

}  // namespace sandboxd::net
