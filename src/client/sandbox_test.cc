// Sandbox/Process against an in-process fake server (Beast), so the
// connection logic is tested without the daemon: upgrade headers, request
// ids, stream parking before the spawn result, stdin streaming, the text
// keepalive, failed-upgrade decoding and server-side close.
#include "client/sandbox.h"

#include <unistd.h>

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
  std::string written() {
    std::lock_guard lock(mu_);
    return written_;
  }
  size_t max_chunk() {
    std::lock_guard lock(mu_);
    return max_chunk_;
  }
  bool closed_handle() {
    std::lock_guard lock(mu_);
    return closed_handle_;
  }
  // The file served by open/fileRead (set before connecting).
  std::string file_;

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
      } else if (method == "writeFile" && m["params"].contains("contentStreamId")) {
        write_stream_ = m["params"]["contentStreamId"].get<std::int64_t>();
        write_request_id_ = m["id"];
        if (write_ended_) reply(nullptr);
      } else if (method == "$sandbox.stream.enqueue" && m["params"]["streamId"] == write_stream_) {
        std::string chunk = Base64Decode(m["params"]["data"].get<std::string>()).value();
        std::lock_guard lock(mu_);
        max_chunk_ = std::max(max_chunk_, chunk.size());
        written_ += chunk;
      } else if (method == "$sandbox.stream.end" && m["params"]["streamId"] == write_stream_) {
        write_ended_ = true;
        if (!write_request_id_.is_null()) {
          send({{"jsonrpc", "2.0"}, {"id", write_request_id_}, {"result", {{"ok", nullptr}}}});
        }
      } else if (method == "walk") {
        // Two records before the result, one after: the client must park them.
        auto rec = [&](const char* path, bool dir) {
          json e = {{"path", path}, {"name", "n"}, {"isFile", !dir}, {"isDirectory", dir}, {"isSymlink", false}};
          notify("enqueue", {{"streamId", 2000}, {"data", Base64Encode(e.dump())}});
        };
        notify("start", {{"streamId", 2000}});
        rec("/w", true);
        rec("/w/a", false);
        reply({{"streamId", 2000}});
        rec("/w/b", false);
        notify("end", {{"streamId", 2000}});
      } else if (method == "open") {
        read_pos_ = 0;
        reply({{"fileHandleId", 7}});
      } else if (method == "fileRead") {
        // Short reads (10 000 bytes) are legal before EOF.
        size_t n = std::min<size_t>({10'000, m["params"]["length"].get<size_t>(), file_.size() - read_pos_});
        if (n == 0) {
          reply({{"data", nullptr}});
        } else {
          reply({{"data", Base64Encode(file_.substr(read_pos_, n))}});
          read_pos_ += n;
        }
      } else if (method == "fileClose") {
        std::lock_guard lock(mu_);
        closed_handle_ = true;
        reply(nullptr);
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
  std::int64_t write_stream_ = -1;
  json write_request_id_;
  bool write_ended_ = false;
  std::string written_;
  size_t max_chunk_ = 0;
  size_t read_pos_ = 0;
  bool closed_handle_ = false;
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

TEST(SandboxFake, WriteFileFromStreamsInBoundedChunks) {
  FakeServer server(FakeServer::Mode::kNormal);
  auto sb = Sandbox::Create(MakeClient(server), {});
  ASSERT_TRUE(sb.has_value());
  std::string data;
  for (int i = 0; i < 300'000; ++i) data += static_cast<char>(i * 7);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::thread feeder([&] {
    (void)!write(p[1], data.data(), data.size());
    close(p[1]);
  });
  std::uint64_t progress = 0;
  auto r = sb->WriteFileFrom("/x", p[0], {}, [&](std::uint64_t n) { progress = n; });
  feeder.join();
  close(p[0]);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, data.size());
  EXPECT_EQ(progress, data.size());
  EXPECT_EQ(server.written(), data);
  EXPECT_LE(server.max_chunk(), 64u * 1024);
  // start, then the request naming the stream, then data, end last.
  std::vector<json> msgs;
  for (auto& t : server.messages()) {
    if (t != "ping") msgs.push_back(json::parse(t));
  }
  ASSERT_GE(msgs.size(), 3u);
  EXPECT_EQ(msgs[0]["method"], "$sandbox.stream.start");
  EXPECT_EQ(msgs[1]["method"], "writeFile");
  EXPECT_EQ(msgs[1]["params"]["contentStreamId"], msgs[0]["params"]["streamId"]);
  EXPECT_FALSE(msgs[1]["params"].contains("content"));
  EXPECT_EQ(msgs.back()["method"], "$sandbox.stream.end");
}

TEST(SandboxFake, WalkParksRecordsBeforeTheResult) {
  FakeServer server(FakeServer::Mode::kNormal);
  auto sb = Sandbox::Create(MakeClient(server), {});
  ASSERT_TRUE(sb.has_value());
  auto entries = sb->Walk("/w");
  ASSERT_TRUE(entries.has_value()) << entries.error().ToString();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].path, "/w");
  EXPECT_TRUE((*entries)[0].is_directory);
  EXPECT_EQ((*entries)[1].path, "/w/a");
  EXPECT_TRUE((*entries)[1].is_file);
  EXPECT_EQ((*entries)[2].path, "/w/b");
}

TEST(SandboxFake, DownloadToHandlesShortReadsAndCloses) {
  FakeServer server(FakeServer::Mode::kNormal);
  for (int i = 0; i < 100'000; ++i) server.file_ += static_cast<char>(i * 13);
  auto sb = Sandbox::Create(MakeClient(server), {});
  ASSERT_TRUE(sb.has_value());
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::string got;
  std::thread reader([&] {
    char buf[4096];
    ssize_t n;
    while ((n = read(p[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  });
  auto r = sb->DownloadTo("/f", p[1]);
  close(p[1]);
  reader.join();
  close(p[0]);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, server.file_.size());
  EXPECT_EQ(got, server.file_);
  EXPECT_TRUE(server.closed_handle());
}

TEST(FsDecode, FileInfoWalkEntryAndOptions) {
  auto fi = DecodeFileInfo(json{{"isFile", true}, {"isDirectory", false}, {"isSymlink", false},
                                {"size", 5000000000.0}, {"mode", 33188}, {"mtime", "2026-01-01T00:00:00.000Z"}});
  ASSERT_TRUE(fi.has_value());
  EXPECT_TRUE(fi->is_file);
  EXPECT_EQ(fi->size, 5000000000u);
  EXPECT_EQ(fi->mode, 33188u);
  EXPECT_EQ(fi->mtime, "2026-01-01T00:00:00.000Z");
  EXPECT_FALSE(DecodeFileInfo(json::array()).has_value());
  auto e = DecodeWalkEntry(R"({"path":"/a/b","name":"b","isFile":false,"isDirectory":true,"isSymlink":false})");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->path, "/a/b");
  EXPECT_TRUE(e->is_directory);
  EXPECT_FALSE(DecodeWalkEntry("{\"path\":1}").has_value());
  EXPECT_FALSE(DecodeWalkEntry("{} {}").has_value());  // two records in one chunk
  EXPECT_TRUE(WriteFileOptionsJson({}).is_null());
  WriteFileOptions o;
  o.append = true;
  o.create = false;
  o.mode = 0600;
  EXPECT_EQ(WriteFileOptionsJson(o), (json{{"append", true}, {"create", false}, {"mode", 0600}}));
}

}  // namespace
}  // namespace sandboxd::client
