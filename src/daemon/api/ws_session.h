// One client WebSocket attached to a sandbox: JSON-RPC 2.0 dispatch, the
// `ping`/`pong` keepalive, client→server and server→client streams (WIRE.md
// §2, §3), and the process and env methods. Event-loop thread only.
#pragma once

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <functional>
#include <string>
#include <vector>

#include "daemon/core/sandbox.h"
#include "daemon/net/sandbox_fetch.h"

namespace sandboxd::api {

class WsSession : public std::enable_shared_from_this<WsSession>, public core::Attachment {
 public:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;

  WsSession(boost::beast::tcp_stream&& stream, std::shared_ptr<core::Sandbox> sb);
  ~WsSession() override;

  // Completes the upgrade (101 with x-deno-sandbox-id) and starts reading.
  void Accept(Request req);

  void CloseFromServer(uint16_t code, const std::string& reason) override;

 private:
  struct Incoming {  // a stream the client sends (stdin)
    std::vector<std::string> chunks;  // buffered until a request claims it
    size_t bytes = 0;
    bool ended = false;
    std::optional<nlohmann::json> error;  // the client's stream.error, if it failed before being claimed
    std::optional<uint32_t> channel;  // once claimed
    std::function<void(const nlohmann::json&)> on_error;  // set by the claimer
    // Instead of a channel, a collector may claim the stream (fetch bodies).
    std::function<void(std::string)> on_chunk;
    std::function<void(bool failed)> on_done;
  };
  struct Outgoing {  // a stream we send (stdout/stderr)
    uint32_t channel = 0;
    int64_t pid = 0;
  };
  struct OutMsg {
    std::string text;
    std::optional<boost::beast::websocket::close_reason> close;
  };

  void ReadNext();
  void OnMessage(std::string_view text);
  void HandleRequest(int64_t id, const std::string& method, const nlohmann::json& params);
  void HandleNotification(const std::string& method, const nlohmann::json& params);

  void Send(std::string text);
  void CloseWith(uint16_t code, const std::string& reason);
  void DoWrite();
  void Teardown();

  void ReplyOk(int64_t id, nlohmann::json value);
  void ReplyAppError(int64_t id, nlohmann::json error_object);
  void ReplyRpcError(int64_t id, int code, const std::string& message);
  void Notify(const char* method, nlohmann::json params);

  // RPC methods.
  void Spawn(int64_t id, const nlohmann::json& p);
  void ProcessWait(int64_t id, const nlohmann::json& p);
  void ProcessKill(int64_t id, const nlohmann::json& p);
  void EnvGet(int64_t id, const nlohmann::json& p);
  void EnvSet(int64_t id, const nlohmann::json& p);
  void EnvDelete(int64_t id, const nlohmann::json& p);
  void EnvToObject(int64_t id, const nlohmann::json& p);

  // Filesystem methods (fs_methods.cc): forwarded to the agent with the
  // sandbox user's credentials; large data travels on agent channels.
  bool HandleFsRequest(int64_t id, const std::string& method, const nlohmann::json& p);
  void FsForward(int64_t id, const std::string& method, nlohmann::json p,
                 std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  void FsReadFile(int64_t id, const std::string& method, nlohmann::json p);
  void FsWriteFile(int64_t id, const std::string& method, nlohmann::json p);
  void FsWalk(int64_t id, const std::string& method, nlohmann::json p);
  void FsFileWrite(int64_t id, const nlohmann::json& p);
  void ReplyAgentResult(int64_t id, const Result<nlohmann::json>& r);
  void CloseHandles();

  // Server→client stream plumbing.
  void ForwardOutput(int64_t stream_id, std::string_view data);
  // Data the client sent on one of its streams (base64, as on the wire).
  void OnClientChunk(int64_t stream_id, std::string_view base64);
  // Binds a client stream to an agent channel we write: flushes what was
  // buffered, and EOF if the client already ended it.
  // `on_error` runs if the client fails the stream (stream.error); without
  // it a failed stream just ends (a process sees EOF on stdin).
  void ClaimIncoming(int64_t stream_id, uint32_t channel, std::function<void()> on_reset,
                     std::function<void(const nlohmann::json&)> on_error = nullptr);
  void ReleaseCredit();

  // fetch (fetch_method.cc): an HTTP request from the sandbox's network.
  void Fetch(int64_t id, const nlohmann::json& p);
  // Hands a client stream's bytes to `on_chunk` (buffered ones first) and its
  // end (or failure) to `on_done`.
  void CollectIncoming(int64_t stream_id, std::function<void(std::string)> on_chunk,
                       std::function<void(bool failed)> on_done);
  // Runs `fn` once the outgoing queue has drained below the low-water mark.
  void WhenDrained(std::function<void()> fn);

  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  std::shared_ptr<core::Sandbox> sb_;
  boost::beast::flat_buffer rbuf_;
  std::deque<OutMsg> outq_;
  size_t out_bytes_ = 0;
  bool writing_ = false;
  bool reading_ = false;
  bool closing_ = false;   // a close is queued or sent: read no more requests
  bool torn_down_ = false;
  bool attached_ = false;
  boost::asio::steady_timer resume_timer_;
  std::map<int64_t, Incoming> incoming_;
  size_t unclaimed_bytes_ = 0;
  std::map<int64_t, Outgoing> outgoing_;
  std::vector<std::pair<uint32_t, uint32_t>> deferred_credit_;  // (channel, bytes)
  std::map<int64_t, std::function<void()>> aborts_;  // abortId → cancel the operation
  std::set<int64_t> handles_;                        // file handles this connection opened
  std::map<int64_t, std::shared_ptr<net::FetchCall>> fetches_;  // response stream id → fetch (for cancel)
  std::map<uint64_t, std::shared_ptr<net::FetchCall>> pending_fetches_;  // until the head arrives
  uint64_t next_fetch_ = 0;
  std::vector<std::function<void()>> on_drain_;
};

}  // namespace sandboxd::api
