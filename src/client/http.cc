#include "client/http.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace sandboxd::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

Result<HttpResponse> HttpCall(const Endpoint& endpoint, const HttpRequest& request,
                              std::chrono::milliseconds timeout) {
  if (endpoint.scheme != "http") {
    return Fail(kUnsupported, "only http:// endpoints are supported (got " + endpoint.scheme + ")");
  }
  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  beast::error_code ec;
  auto results = resolver.resolve(endpoint.host, endpoint.port, ec);
  if (ec) return Fail(kConnectionFailed, "resolving " + endpoint.host + ": " + ec.message());

  beast::tcp_stream stream(ioc);
  http::request<http::string_body> req;
  req.method_string(request.method);
  req.target(request.target);
  req.version(11);
  req.set(http::field::host, endpoint.HostHeader());
  req.set(http::field::connection, "close");
  for (const auto& [k, v] : request.headers) req.set(k, v);
  if (!request.body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = request.body;
  }
  req.prepare_payload();

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  std::string stage = "connecting to " + endpoint.Origin();
  bool done = false;

  stream.expires_after(timeout);
  stream.async_connect(results, [&](beast::error_code e, const tcp::endpoint&) {
    if (e) {
      ec = e;
      return;
    }
    stage = "sending request to " + endpoint.Origin();
    http::async_write(stream, req, [&](beast::error_code e2, std::size_t) {
      if (e2) {
        ec = e2;
        return;
      }
      stage = "reading response from " + endpoint.Origin();
      http::async_read(stream, buffer, parser, [&](beast::error_code e3, std::size_t) {
        ec = e3;
        done = !e3;
      });
    });
  });
  ioc.run();
  if (!done) {
    if (ec == beast::error::timeout) return Fail(kTimeout, stage + ": timed out");
    return Fail(kConnectionFailed, stage + ": " + ec.message());
  }
  HttpResponse res;
  const auto& msg = parser.get();
  res.status = static_cast<int>(msg.result_int());
  res.body = msg.body();
  if (auto it = msg.find(http::field::link); it != msg.end()) res.link = std::string(it->value());
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return res;
}

}  // namespace sandboxd::client
