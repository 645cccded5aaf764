#include "daemon/net/tls_contexts.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <filesystem>
#include <fstream>

#include "daemon/net/sandbox_ca.h"

namespace sandboxd::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = asio::ssl;
using asio::ip::tcp;
using TlsStream = ssl::stream<beast::tcp_stream>;

struct TempFile {
  std::filesystem::path path;
  explicit TempFile(const std::string& content) {
    path = std::filesystem::temp_directory_path() / ("sbx-tls-test-" + std::to_string(::getpid()) +
                                                     "-" + std::to_string(counter++) + ".pem");
    std::ofstream(path) << content;
  }
  ~TempFile() { std::filesystem::remove(path); }
  static inline int counter = 0;
};

struct HandshakeResult {
  boost::system::error_code client, server;
  std::string alpn;        // as the client sees it
  std::string server_sni;  // as the server saw it
};

// A TCP pair on loopback, a TLS handshake over it, both sides in this
// thread.
HandshakeResult Handshake(ssl::context& server_ctx, ssl::context& client_ctx,
                          const std::string& host, const unsigned char* alpn = nullptr,
                          unsigned alpn_len = 0) {
  asio::io_context io;
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  tcp::socket a(io);
  a.connect(acc.local_endpoint());
  tcp::socket b = acc.accept();
  TlsStream client(beast::tcp_stream(std::move(a)), client_ctx);
  TlsStream server(beast::tcp_stream(std::move(b)), server_ctx);
  HandshakeResult r;
  auto st = PrepareUpstreamTls(client, host);
  EXPECT_TRUE(st) << st.error().message;
  if (alpn) SSL_set_alpn_protos(client.native_handle(), alpn, alpn_len);
  beast::get_lowest_layer(client).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(server).expires_after(std::chrono::seconds(10));
  client.async_handshake(ssl::stream_base::client, [&](boost::system::error_code ec) {
    r.client = ec;
    if (ec) beast::get_lowest_layer(client).close();
  });
  server.async_handshake(ssl::stream_base::server, [&](boost::system::error_code ec) {
    r.server = ec;
    if (ec) beast::get_lowest_layer(server).close();
  });
  io.run();
  const unsigned char* sel = nullptr;
  unsigned sel_len = 0;
  SSL_get0_alpn_selected(client.native_handle(), &sel, &sel_len);
  if (sel) r.alpn.assign(reinterpret_cast<const char*>(sel), sel_len);
  if (const char* sni = SSL_get_servername(server.native_handle(), TLSEXT_NAMETYPE_host_name))
    r.server_sni = sni;
  return r;
}

class TlsContexts : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = SandboxCa::Create("tls-test", {"api.test", "127.0.0.1"});
    ASSERT_TRUE(ca);
    ca_ = *ca;
    ca_file_ = std::make_unique<TempFile>(ca_->CertPem());
    auto client = MakeUpstreamClientContext({ca_file_->path.string()});
    ASSERT_TRUE(client) << client.error().message;
    client_ = *client;
  }
  std::shared_ptr<SandboxCa> ca_;
  std::unique_ptr<TempFile> ca_file_;
  std::shared_ptr<ssl::context> client_;
};

TEST_F(TlsContexts, VerifiesNameAndNegotiatesHttp11) {
  auto server = ca_->ServerContextFor("api.test");
  ASSERT_TRUE(server);
  auto r = Handshake(**server, *client_, "api.test");
  EXPECT_FALSE(r.client) << r.client.message();
  EXPECT_FALSE(r.server) << r.server.message();
  EXPECT_EQ(r.alpn, "http/1.1");
  EXPECT_EQ(r.server_sni, "api.test");
}

TEST_F(TlsContexts, RejectsWrongName) {
  auto server = ca_->ServerContextFor("api.test");
  ASSERT_TRUE(server);
  auto r = Handshake(**server, *client_, "other.test");
  EXPECT_TRUE(r.client);
}

TEST_F(TlsContexts, RejectsUnknownCa) {
  auto plain = MakeUpstreamClientContext({});  // system roots only
  ASSERT_TRUE(plain);
  auto server = ca_->ServerContextFor("api.test");
  ASSERT_TRUE(server);
  auto r = Handshake(**server, **plain, "api.test");
  EXPECT_TRUE(r.client);
}

TEST_F(TlsContexts, IpLiteralVerifiesAddressWithoutSni) {
  auto server = ca_->ServerContextFor("127.0.0.1");
  ASSERT_TRUE(server);
  auto r = Handshake(**server, *client_, "127.0.0.1");
  EXPECT_FALSE(r.client) << r.client.message();
  EXPECT_EQ(r.server_sni, "");
  auto wrong = Handshake(**server, *client_, "127.0.0.2");
  EXPECT_TRUE(wrong.client);
}

TEST_F(TlsContexts, AlpnOnlyHttp11) {
  auto server = ca_->ServerContextFor("api.test");
  ASSERT_TRUE(server);
  static constexpr unsigned char kH2Only[] = "\x02h2";
  auto h2 = Handshake(**server, *client_, "api.test", kH2Only, sizeof kH2Only - 1);
  EXPECT_TRUE(h2.client);  // no_application_protocol
  static constexpr unsigned char kBoth[] = "\x02h2\x08http/1.1";
  auto both = Handshake(**server, *client_, "api.test", kBoth, sizeof kBoth - 1);
  EXPECT_FALSE(both.client) << both.client.message();
  EXPECT_EQ(both.alpn, "http/1.1");
  // No ALPN at all: fine, HTTP/1.1.
  auto ctx = MakeUpstreamClientContext({ca_file_->path.string()});
  ASSERT_TRUE(ctx);
  SSL_CTX_set_alpn_protos((*ctx)->native_handle(), nullptr, 0);
  auto none = Handshake(**server, **ctx, "api.test");
  EXPECT_FALSE(none.client) << none.client.message();
  EXPECT_EQ(none.alpn, "");
}

TEST(TlsContextsFiles, MissingExtraCaFileFails) {
  auto ctx = MakeUpstreamClientContext({"/nonexistent/ca.pem"});
  ASSERT_FALSE(ctx);
  EXPECT_NE(ctx.error().message.find("/nonexistent/ca.pem"), std::string::npos);
}

}  // namespace
}  // namespace sandboxd::net
