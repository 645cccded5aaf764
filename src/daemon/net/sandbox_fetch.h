// The SDK's `fetch` RPC: an HTTP request made from the sandbox's own network.
// The connection is a socket created inside the sandbox's network namespace,
// so it takes the sandbox's route, is redirected by the sandbox's firewall
// rules into the egress proxy and meets exactly the rules the sandbox's own
// processes meet (allowNet, internal addresses, secret substitution,
// redaction). Redirects are followed here, hop by hop, each hop a new
// connection that the proxy judges again.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::net {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct FetchRequest {
  std::string url;
  std::string method = "GET";
  HeaderList headers;
  bool follow_redirects = true;
  std::string body;  // buffered: a redirect may have to send it again
};

struct FetchHead {
  int status = 0;
  std::string status_text;
  HeaderList headers;  // lower-case names, in order
  bool has_body = false;
  std::string url;     // the final URL after redirects
};

// Where the response goes. Called on the io thread.
struct FetchSink {
  // Once: the head, or why there is none (the message is for the user).
  std::function<void(Result<FetchHead>)> on_head;
  // Body bytes; call `resume` when ready for more (backpressure).
  std::function<void(std::string_view data, std::function<void()> resume)> on_data;
  // Once, after the body (not called if on_head got an error).
  std::function<void(Status)> on_end;
};

struct FetchTarget {
  int netns_fd = -1;                 // the sandbox's network namespace (borrowed for the call)
  uint32_t gateway_ip = 0;           // any address: the firewall sends every connection to the proxy
  std::shared_ptr<boost::asio::ssl::context> tls;  // system roots + test CAs + the sandbox CA
  // Set for a sandbox whose address belongs to a guest (microVM): each hop's
  // connection, already connected (NetworkService::ConnectAsSandbox),
  // instead of a socket in netns_fd. Called on the fetch's executor.
  std::function<Result<UniqueFd>(const boost::asio::ip::tcp::endpoint&)> connect;
};

class FetchCall {
 public:
  virtual ~FetchCall() = default;
  virtual void Cancel() = 0;  // on_head/on_end then report ECANCELED
};

// Starts the request; the returned handle cancels it.
std::shared_ptr<FetchCall> StartFetch(boost::asio::any_io_executor ex, const FetchTarget& target, FetchRequest req,
                                      FetchSink sink);

// "https://host:port/path?q" → parts; errors name the problem. Exposed for tests.
struct ParsedUrl {
  bool tls = false;
  std::string host;  // without brackets
  uint16_t port = 0;
  std::string target;  // path + query, at least "/"
};
Result<ParsedUrl> ParseHttpUrl(std::string_view url);
// Resolves a Location header against the URL it came from.
Result<std::string> ResolveLocation(std::string_view base, std::string_view location);

}  // namespace sandboxd::net
