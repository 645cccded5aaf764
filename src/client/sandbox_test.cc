// Sandbox/Process against an in-process fake server (Beast), so the
// connection logic is tested without the daemon: upgrade headers, request
// ids, stream parking before the spawn result, stdin streaming, the text
// keepalive, failed-upgrade decoding and server-side close.
#include "client/sandbox.h"

#include <atomic>
#include <mutex>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>

namespace sandboxd::client {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

constexpr char kId[] = "sbx_tst_0123456789abcdefghjk";

// Serves exactly one connection on a background thread.
class FakeServer {
 public:
  enum class Mode { kNormal, kRejectToken };
  explicit FakeServer(Mode mode) : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this, mode] { Serve(mode); });
  }
  ~FakeServer() {
    beast::error_code ec;
    acceptor_.close(ec);
    if (thread_.joinable()) thread_.join();
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }
  std::vector<std::string> messages() {
    std::lock_guard lock(mu_);
    return messages_;
  }
  http::request<http::string_body> request() {
    std::lock_guard lock(mu_);
    return request_;
  }

 private:
  void Serve(Mode mode) {
    beast::error_code ec;
    tcp::socket sock(ioc_);
    acceptor_.accept(sock, ec);
    if (ec) return;
    sock.set_option(tcp::no_delay(true), ec);
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::read(sock, buf, req, ec);
    if (ec) return;
    {
      std::lock_guard lock(mu_);
      request_ = req;
    }
    if (mode == Mode::kRejectToken) {
      http::response<http::string_body> res{http::status::unauthorized, 11};
      res.set(http::field::content_type, "application/json");
      res.body() = R"({"code":"INVALID_TOKEN","message":"The access token is invalid"})";
      res.prepare_payload();
      http::write(sock, res, ec);
      return;
    }
    websocket::stream<tcp::socket> ws(std::move(sock));
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set("x-deno-sandbox-id", kId); }));
    ws.accept(req, ec);
    if (ec) return;
    auto send = [&](const json& j) {
      ws.text(true);
      ws.write(asio::buffer(j.dump()), ec);
    };
    std::string stdin_data;
    for (;;) {
      beast::flat_buffer in;
      ws.read(in, ec);
      if (ec) return;
      std::string text = beast::buffers_to_string(in.data());
      {
        std::lock_guard lock(mu_);
        messages_.push_back(text);
      }
      if (text == "ping") {
        ws.write(asio::buffer(std::string("pong")), ec);
        continue;
      }
      json m = json::parse(text);
      std::string method = m.value("method", "");
      auto reply = [&](json ok) { send({{"jsonrpc", "2.0"}, {"id", m["id"]}, {"result", {{"ok", ok}}}}); };
      auto notify = [&](const char* what, json params) {
        send({{"jsonrpc", "2.0"}, {"method", std::string("$sandbox.stream.") + what}, {"params", params}});
      };
      if (method == "envSet") {
        reply(nullptr);
      } else if (method == "envGet") {
        reply("v");
      } else if (method == "spawn" && m["params"]["command"] == "echo") {
        // Output before the result: the client must park it.
        notify("start", {{"streamId", 1000}});
        notify("enqueue", {{"streamId", 1000}, {"data", Base64Encode("hi\n")}});
        reply({{"pid", 42}, {"stdoutStreamId", 1000}, {"stderrStreamId", nullptr}});
        notify("end", {{"streamId", 1000}});
      } else if (method == "spawn" && m["params"]["command"] == "cat") {
        notify("start", {{"streamId", 1001}});
        reply({{"pid", 43}, {"stdoutStreamId", 1001}, {"stderrStreamId", nullptr}});
      } else if (method == "$sandbox.stream.enqueue") {
        stdin_data += Base64Decode(m["params"]["data"].get<std::string>()).value();
      } else if (method == "$sandbox.stream.end") {
        notify("enqueue", {{"streamId", 1001}, {"data", Base64Encode(stdin_data)}});
        notify("end", {{"streamId", 1001}});
      } else if (method == "processWait") {
        int pid = m["params"]["pid"];
        reply({{"success", pid != 42}, {"code", pid == 42 ? 3 : 0}, {"signal", nullptr}, {"oom", nullptr}});
      } else if (method == "boom") {
        send({{"jsonrpc", "2.0"},
              {"id", m["id"]},
              {"result", {{"error", {{"constructorName", "NotFound"}, {"message", "nope"}, {"code", "ENOENT"}}}}}});
      } else if (method == "hangup") {
        ws.close(websocket::close_reason(websocket::close_code::going_away, "sandbox killed"), ec);
        return;
      } else if (m.contains("id")) {
        send({{"jsonrpc", "2.0"}, {"id", m["id"]}, {"error", {{"code", -32601}, {"message", "Method not found"}}}});
      }
    }
  }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> messages_;
  http::request<http::string_body> request_;
};

Client MakeClient(const FakeServer& server) {
  ClientOptions o;
  o.endpoint = server.endpoint();
  o.token = "ddo_secret";
  return Client::Create(o).value();
}

TEST(SandboxFake, CreateSendsHeadersAndEnv) {
  FakeServer server(FakeServer::Mode::kNormal);
  CreateOptions o;
  o.labels = {{"app", "t\xC3\xA9st"}};
  o.timeout = "30s";
  o.env = {{"A", "1"}, {"B", "2"}};
  auto sb = Sandbox::Create(MakeClient(server), o);
  ASSERT_TRUE(sb.has_value()) << sb.error().ToString();
  EXPECT_EQ(sb->id(), kId);
  auto req = server.request();
  EXPECT_EQ(req.target(), "/api/v3/sandboxes/create");
  EXPECT_EQ(req["authorization"], "Bearer ddo_secret");
  std::string config = Base64Decode(std::string(req["x-deno-sandbox-config"])).value();
  EXPECT_NE(config.find("\"app\":\"t\xE9st\""), std::string::npos) << config;
  EXPECT_EQ(config.find("\"stop_at_ms\":"), 1u) << config;
  auto msgs = server.messages();
  ASSERT_GE(msgs.size(), 2u);
  EXPECT_EQ(json::parse(msgs[0])["id"], 0);  // ids start at 0
  EXPECT_EQ(json::parse(msgs[0])["method"], "envSet");
  EXPECT_EQ(json::parse(msgs[1])["id"], 1);
  EXPECT_TRUE(sb->Close().has_value());
  EXPECT_TRUE(sb->closed());
}

TEST(SandboxFake, SpawnParksEarlyOutputAndDecodesStatus) {
  FakeServer server(FakeServer::Mode::kNormal);
  auto sb = Sandbox::Create(MakeClient(server), {});
  ASSERT_TRUE(sb.has_value()) << sb.error().ToString();
  auto p = sb->Spawn("echo", {"hi"});
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  EXPECT_EQ(p->pid(), 42);
  auto st = p->Wait();
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_EQ(st->code, 3);
  EXPECT_FALSE(st->success);
  EXPECT_EQ(p->TakeStdout(), "hi\n");
  EXPECT_EQ(p->TakeStderr(), "");
}

TEST(SandboxFake, StdinStreamsToTheProcess) {
  FakeServer server(FakeServer::Mode::kNormal);
  auto sb = Sandbox::Create(MakeClient(server), {});
  ASSERT_TRUE(sb.has_value());
  SpawnOptions o;
  o.stdin_mode = Stdio::kPiped;
  std::string got;
  o.on_stdout = [&](std::string_view c) { got += c; };
  auto p = sb->Spawn("cat", {}, std::move(o));
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  std::string big(200'000, 'x');  // several 64 KiB frames
  ASSERT_TRUE(p->WriteStdin("abc").has_value());
  ASSERT_TRUE(p->WriteStdin(big).has_value());
  ASSERT_TRUE(p->CloseStdin().has_value());
  auto st = p->Wait();
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_EQ(got, "abc" + big);
  // The start notification precedes the spawn request that names the stream.
  auto msgs = server.messages();
  auto start = json::parse(msgs[0]);
  EXPECT_EQ(start["method"], "$sandbox.stream.start");
  EXPECT_EQ(json::parse(msgs[1])["params"]["stdinStreamId"], start["params"]["streamId"]);
}

TEST(SandboxFake, RpcErrorsAndServerClose) {
  FakeServer server(FakeServer::Mode::kNormal);
  auto sb = Sandbox::Create(MakeClient(server), {});
  ASSERT_TRUE(sb.has_value());
  auto r = sb->Call("boom");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, "ENOENT");
  EXPECT_EQ(r.error().kind, "NotFound");
  auto unknown = sb->Call("nosuch");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, kRpcError);
  EXPECT_EQ(sb->EnvGet("k").value(), "v");
  auto gone = sb->Call("hangup");
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().code, kConnectionClosed);
  EXPECT_NE(gone.error().message.find("1001"), std::string::npos) << gone.error().message;
  EXPECT_TRUE(sb->closed());
  EXPECT_FALSE(sb->Spawn("echo").has_value());
}

TEST(SandboxFake, KeepalivePing) {
  FakeServer server(FakeServer::Mode::kNormal);
  auto sb = Sandbox::Create(MakeClient(server), {});
  ASSERT_TRUE(sb.has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(2300));
  auto msgs = server.messages();
  EXPECT_NE(std::find(msgs.begin(), msgs.end(), "ping"), msgs.end());
  EXPECT_TRUE(sb->EnvSet("k", "v").has_value());  // the pong did not confuse the client
}

TEST(SandboxFake, FailedUpgradeCarriesServerCode) {
  FakeServer server(FakeServer::Mode::kRejectToken);
  auto sb = Sandbox::Create(MakeClient(server), {});
  ASSERT_FALSE(sb.has_value());
  EXPECT_EQ(sb.error().code, "INVALID_TOKEN");
  EXPECT_EQ(sb.error().http_status, 401);
  EXPECT_NE(sb.error().message.find("The access token is invalid"), std::string::npos);
}

TEST(SandboxFake, ConnectValidatesIdLocally) {
  ClientOptions o;
  o.endpoint = "http://127.0.0.1:1";
  o.token = "ddo_x";
  auto sb = Sandbox::Connect(Client::Create(o).value(), "not-an-id");
  ASSERT_FALSE(sb.has_value());
  EXPECT_EQ(sb.error().code, kInvalidArgument);
  auto refused = Sandbox::Connect(Client::Create(o).value(), kId);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, kConnectionFailed);
}

}  // namespace
}  // namespace sandboxd::client
