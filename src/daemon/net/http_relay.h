// The egress proxy's HTTP/1.1 relay, for intercepted TLS (secret
// substitution and redaction) and for plain HTTP (every request's Host is
// checked, not just the first one's). One relay serves one sandbox
// connection, request by request: it checks each request's Host against the
// connection (SNI) and the sandbox's policy, connects upstream through the
// caller, puts secret values in for placeholders on the way out (TLS only),
// puts placeholders back for values on the way in, and refuses (403/502)
// where it cannot do that safely rather than leak a value or silently send
// a placeholder.
//
// Threading: a relay runs on its downstream stream's executor, which must
// not run handlers concurrently (one io_context thread, or a strand); the
// callbacks in RelayOptions are called there, and `connect` may complete
// from any thread (the result is posted back).
#pragma once

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace sandboxd::net {

// A byte stream of either kind (TCP, or TLS over TCP), type-erased, owning
// the stream. Satisfies Asio's AsyncReadStream and AsyncWriteStream; one read
// and one write may be outstanding at a time. Completion handlers run on
// their associated executor (by default the stream's). A TLS stream must be
// past its handshake. The object must not move while an operation is
// pending (composed operations keep a reference to it), and operations need
// a non-empty stream.
class AnyStream {
 public:
  using executor_type = boost::asio::any_io_executor;
  using IoHandler = std::move_only_function<void(boost::system::error_code, std::size_t)>;
  static constexpr size_t kMaxWriteBuffers = 16;

  // What a stream kind provides; implement it to relay over something else.
  // An Impl must stay alive until its pending handlers have run (hold a
  // shared_ptr to itself in them): an AnyStream may be dropped with
  // operations pending, once it has been closed.
  class Impl {
   public:
    virtual ~Impl() = default;
    virtual executor_type executor() = 0;
    virtual void ReadSome(boost::asio::mutable_buffer b, IoHandler h) = 0;
    // `n` ≤ kMaxWriteBuffers buffers; the callee copies the array.
    virtual void WriteSome(const boost::asio::const_buffer* b, size_t n, IoHandler h) = 0;
    // Deadline for pending and later operations (they fail with
    // boost::beast::error::timeout and the stream closes); nullopt: none.
    virtual void Expire(std::optional<std::chrono::steady_clock::duration> d) = 0;
    // Closes at once; pending operations complete with an error.
    virtual void Close() = 0;
    // Ends gracefully (TLS close_notify; TCP FIN, then drain what the peer
    // still sends, so it is not answered with a reset), bounded in time,
    // then closes. `done` runs on the executor. No other operation may be
    // pending.
    virtual void Shutdown(std::move_only_function<void()> done) = 0;
    virtual bool tls() const = 0;
  };

  AnyStream() = default;
  explicit AnyStream(boost::beast::tcp_stream s);
  explicit AnyStream(boost::asio::ssl::stream<boost::beast::tcp_stream> s);
  explicit AnyStream(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  AnyStream(AnyStream&&) noexcept = default;
  AnyStream& operator=(AnyStream&&) noexcept = default;
  ~AnyStream() = default;

  explicit operator bool() const { return impl_ != nullptr; }
  bool is_tls() const { return impl_ && impl_->tls(); }
  executor_type get_executor() { return impl_->executor(); }

  template <typename MutableBufferSequence, typename Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const MutableBufferSequence& bufs) {
          // Reads fill one buffer: read_some may always transfer less.
          boost::asio::mutable_buffer first;
          for (auto it = boost::asio::buffer_sequence_begin(bufs);
               it != boost::asio::buffer_sequence_end(bufs); ++it) {
            boost::asio::mutable_buffer b(*it);
            if (b.size() != 0) {
              first = b;
              break;
            }
          }
          impl_->ReadSome(first, Bind(std::move(handler)));
        },
        token, buffers);
  }

  template <typename ConstBufferSequence, typename Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const ConstBufferSequence& bufs) {
          std::array<boost::asio::const_buffer, kMaxWriteBuffers> arr;
          size_t n = 0;
          for (auto it = boost::asio::buffer_sequence_begin(bufs);
               it != boost::asio::buffer_sequence_end(bufs) && n < arr.size(); ++it) {
            boost::asio::const_buffer b(*it);
            if (b.size() != 0) arr[n++] = b;
          }
          impl_->WriteSome(arr.data(), n, Bind(std::move(handler)));
        },
        token, buffers);
  }

  void ExpiresAfter(std::chrono::steady_clock::duration d) { impl_->Expire(d); }
  void ExpiresNever() { impl_->Expire(std::nullopt); }
  void Close() {
    if (impl_) impl_->Close();
  }
  void Shutdown(std::move_only_function<void()> done) { impl_->Shutdown(std::move(done)); }

 private:
  template <typename Handler>
  IoHandler Bind(Handler handler) {
    return [h = std::move(handler), ex = impl_->executor()](boost::system::error_code ec,
                                                            std::size_t n) mutable {
      auto hex = boost::asio::get_associated_executor(h, ex);
      boost::asio::dispatch(hex, boost::beast::bind_front_handler(std::move(h), ec, n));
    };
  }

  std::shared_ptr<Impl> impl_;
};

struct RelayHost {
  std::string host;  // normalised: lower case, no trailing dot, IPv6 without brackets
  uint16_t port = 0;
  bool operator==(const RelayHost&) const = default;
};

struct Substitution {
  std::string placeholder, value;
};

struct RequestDecision {
  bool allowed = false;
  std::vector<Substitution> subs;  // secrets for this host (empty: none apply)
  std::string deny_reason;
};

// One per request the relay answered or forwarded. Never carries a secret
// value (nor the request target, which may hold one after substitution).
struct RelayEvent {
  std::string host;  // "" when the request was refused before its Host was known
  uint16_t port = 0;
  std::string method;
  bool allowed = false;             // the policy allowed host:port
  size_t substituted = 0;           // placeholders replaced by values in the request
  size_t redacted = 0;              // values replaced by placeholders in the response
  size_t foreign_placeholders = 0;  // placeholders sent on as they are (secret not for this host)
  unsigned status = 0;              // sent to the sandbox; 0 when none could be
  std::string reason;               // why refused or failed; "" when relayed
};

struct RelayOptions {
  // true: intercepted TLS; every request's Host must be `sni` and `port`
  // (else 421). false: plain HTTP; secrets are never substituted.
  bool downstream_tls = false;
  std::string sni;
  uint16_t port = 0;  // the port the sandbox dialled (a Host without port means it)
  // Allowlist and the secrets that apply to host:port.
  std::function<RequestDecision(const RelayHost&)> decide;
  // Every secret of this sandbox, to notice a placeholder going to a host it
  // does not apply to (it is sent as is, and counted).
  std::vector<Substitution> all_placeholders;
  // Connects to host:port (resolving, checking address classes, and
  // wrapping TLS with full verification when upstream_tls). An error's
  // message is logged, not shown to the sandbox.
  std::function<void(const RelayHost&, bool upstream_tls, std::function<void(Result<AnyStream>)>)>
      connect;
  std::function<void(const RelayEvent&)> on_event;
  // Request bodies up to this size that need substitution are buffered and
  // re-sent with a corrected Content-Length; larger ones stream, and may
  // not carry a placeholder (fail closed with 502).
  size_t max_buffered_body = 16 << 20;
  std::chrono::milliseconds idle_timeout{60000};      // keep-alive wait; body inactivity
  std::chrono::milliseconds header_timeout{30000};    // reading a request's header
  std::chrono::milliseconds upstream_timeout{60000};  // connect, and the response header (504)
};

// Relays requests from `downstream` until either side closes, a request is
// refused, or a timeout; then closes both and calls `done` (once).
// `already_read`: bytes read from `downstream` before (sniffing).
void RunHttpRelay(AnyStream downstream, boost::beast::flat_buffer already_read,
                  RelayOptions options, std::function<void()> done);

}  // namespace sandboxd::net
