#include "client/wire.h"

#include <gtest/gtest.h>

namespace sandboxd::client {
namespace {

using std::chrono::milliseconds;

TEST(Base64, RoundTrip) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("abcdef"), "YWJjZGVm");
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  EXPECT_EQ(Base64Decode(Base64Encode(all)).value(), all);
  EXPECT_EQ(Base64Decode("YWJjZGVm").value(), "abcdef");
  EXPECT_FALSE(Base64Decode("a$bc").has_value());
  EXPECT_FALSE(Base64Decode("Zg==Zg").has_value());
}

TEST(ConfigHeader, DefaultOrderAndVolumes) {
  SandboxConfig c;
  EXPECT_EQ(BuildConfigJson(c), R"({"memory_mb":1280,"volumes":[]})");
}

TEST(ConfigHeader, KeyOrderFollowsTheSdk) {
  SandboxConfig c;
  c.region = "ams";
  c.allow_net = std::vector<std::string>{"example.com"};
  c.labels = {{"env", "dev"}, {"app", "web"}};
  c.memory_mb = 2048;
  c.stop_at_ms = 1795935478931;
  EXPECT_EQ(BuildConfigJson(c),
            R"({"stop_at_ms":1795935478931,"memory_mb":2048,"labels":{"app":"web","env":"dev"},)"
            R"("volumes":[],"allow_net":["example.com"],"region":"ams"})");
}

TEST(ConfigHeader, IsolationExtensionIsEmittedLast) {
  SandboxConfig c;
  c.isolation = "microvm";
  EXPECT_EQ(BuildConfigJson(c), R"({"memory_mb":1280,"volumes":[],"isolation":"microvm"})");
  c.region = "ams";
  EXPECT_EQ(BuildConfigJson(c), R"({"memory_mb":1280,"volumes":[],"region":"ams","isolation":"microvm"})");
}

TEST(ConfigHeader, EmptyAllowNetIsSent) {
  SandboxConfig c;
  c.allow_net = std::vector<std::string>{};
  EXPECT_EQ(BuildConfigJson(c), R"({"memory_mb":1280,"volumes":[],"allow_net":[]})");
}

TEST(ConfigHeader, SecretsFollowAllowNetInGivenOrder) {
  SandboxConfig c;
  c.allow_net = std::vector<std::string>{"example.com"};
  c.secrets = {{"Z_KEY", {"api.example.com", "*.example.org"}, "s3cr3t"}, {"A_KEY", {"x.example"}, ""}};
  c.region = "ams";
  EXPECT_EQ(BuildConfigJson(c),
            R"({"memory_mb":1280,"volumes":[],"allow_net":["example.com"],)"
            R"("secrets":{"Z_KEY":{"hosts":["api.example.com","*.example.org"],"value":"s3cr3t"},)"
            R"("A_KEY":{"hosts":["x.example"],"value":""}},"region":"ams"})");
}

TEST(ConfigHeader, Latin1Encoding) {
  SandboxConfig c;
  c.labels = {{"app", "t\xC3\xA9st"}};  // "tést" in UTF-8
  std::string json = BuildConfigJson(c);
  auto header = EncodeConfigHeader(json);
  ASSERT_TRUE(header.has_value()) << header.error().message;
  std::string bytes = Base64Decode(*header).value();
  EXPECT_EQ(bytes, "{\"memory_mb\":1280,\"labels\":{\"app\":\"t\xE9st\"},\"volumes\":[]}");
  EXPECT_NE(bytes.find('\xE9'), std::string::npos);
  EXPECT_EQ(bytes.find('\xC3'), std::string::npos);
}

TEST(ConfigHeader, RejectsCharactersAboveLatin1) {
  EXPECT_EQ(EncodeConfigHeader("{\"a\":\"\xE2\x82\xAC\"}").error().code, kInvalidArgument);  // €
  EXPECT_FALSE(EncodeConfigHeader("\xC3").has_value());  // truncated UTF-8
}

TEST(Timeout, Durations) {
  EXPECT_EQ(ParseDuration("30s").value(), milliseconds(30'000));
  EXPECT_EQ(ParseDuration("5m").value(), milliseconds(300'000));
  EXPECT_EQ(ParseDuration("1.5m").value(), milliseconds(60'000));  // parseInt
  EXPECT_EQ(ParseDuration("5ms").value(), milliseconds(5'000));    // "5m" + 's'
  EXPECT_EQ(ParseDuration(" 7s").value(), milliseconds(7'000));
}

TEST(Timeout, Invalid) {
  for (const char* bad : {"1h", "0s", "abc", "", "s", "-5s", "0m", "5", "session"}) {
    EXPECT_FALSE(ParseDuration(bad).has_value()) << bad;
  }
  EXPECT_EQ(ParseDuration("1h").error().code, kInvalidArgument);
}

TEST(Timeout, Session) {
  EXPECT_EQ(ParseTimeout("session").value(), std::nullopt);
  EXPECT_EQ(ParseTimeout("").value(), std::nullopt);
  EXPECT_EQ(ParseTimeout("30s").value(), milliseconds(30'000));
  EXPECT_FALSE(ParseTimeout("1h").has_value());
}

TEST(LabelQuery, EncodesLikeUrlSearchParams) {
  EXPECT_EQ(LabelQuery({}), "");
  EXPECT_EQ(LabelQuery({{"app", "web"}}), "labels%5Bapp%5D=web");
  EXPECT_EQ(LabelQuery({{"env", "a b"}, {"app", "x&y=z"}}),
            "labels%5Bapp%5D=x%26y%3Dz&labels%5Benv%5D=a+b");
  EXPECT_EQ(FormUrlEncode("t\xC3\xA9-_.*~"), "t%C3%A9-_.*%7E");
}

TEST(LabelQuery, NextCursorFromLink) {
  EXPECT_EQ(NextCursorFromLink(""), std::nullopt);
  EXPECT_EQ(NextCursorFromLink(R"(<http://127.0.0.1:8080/api/v2/sandboxes?cursor=abc>; rel="next")"), "abc");
  EXPECT_EQ(NextCursorFromLink(R"(<http://h/x?limit=2&cursor=a%2Bb>; rel="next")"), "a+b");
  EXPECT_EQ(NextCursorFromLink(R"(<http://h/x?cursor=p>; rel="prev", <http://h/x?cursor=n>; rel="next")"), "n");
  EXPECT_EQ(NextCursorFromLink(R"(<http://h/x?cursor=p>; rel="prev")"), std::nullopt);
}

TEST(Endpoint, Parse) {
  auto ep = ParseEndpoint("http://127.0.0.1:8080").value();
  EXPECT_EQ(ep.host, "127.0.0.1");
  EXPECT_EQ(ep.port, "8080");
  EXPECT_EQ(ep.HostHeader(), "127.0.0.1:8080");
  EXPECT_EQ(ParseEndpoint("http://example.com/some/path").value().port, "80");
  EXPECT_EQ(ParseEndpoint("https://example.com").value().port, "443");
  EXPECT_EQ(ParseEndpoint("ws://[::1]:9000/").value().HostHeader(), "[::1]:9000");
  EXPECT_FALSE(ParseEndpoint("127.0.0.1:8080").has_value());
  EXPECT_FALSE(ParseEndpoint("ftp://x").has_value());
  EXPECT_FALSE(ParseEndpoint("http://x:99999").has_value());
  EXPECT_FALSE(ParseEndpoint("http://:80").has_value());
}

TEST(SandboxId, Validation) {
  EXPECT_TRUE(IsValidSandboxId("sbx_ord_bd87cdmqwzd3ee32pcy4"));
  EXPECT_FALSE(IsValidSandboxId("sbx_ord_bd87cdmqwzd3ee32pcyi"));  // 'i' not allowed
  EXPECT_FALSE(IsValidSandboxId("sbx_or_bd87cdmqwzd3ee32pcy4"));
  EXPECT_FALSE(IsValidSandboxId("null"));
}

TEST(StreamNotification, Enqueue) {
  auto msg = nlohmann::json::parse(
      R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":1006,"data":"YWJjZGVm"}})");
  auto n = ParseStreamNotification(msg).value();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->event, StreamEvent::kEnqueue);
  EXPECT_EQ(n->stream_id, 1006);
  EXPECT_EQ(n->data, "abcdef");
}

TEST(StreamNotification, StartEndErrorCancel) {
  auto parse = [](const char* text) { return ParseStreamNotification(nlohmann::json::parse(text)); };
  EXPECT_EQ(parse(R"({"method":"$sandbox.stream.start","params":{"streamId":0}})").value()->event,
            StreamEvent::kStart);
  EXPECT_EQ(parse(R"({"method":"$sandbox.stream.end","params":{"streamId":3}})").value()->stream_id, 3);
  auto err = parse(
      R"({"method":"$sandbox.stream.error","params":{"streamId":4,"error":{"constructorName":"NotFound","message":"gone","code":"ENOENT"}}})");
  ASSERT_TRUE(err.value()->error.has_value());
  EXPECT_EQ(err.value()->error->code, "ENOENT");
  EXPECT_EQ(err.value()->error->kind, "NotFound");
  auto cancel = parse(R"({"method":"$sandbox.stream.cancel","params":{"streamId":5,"reason":null}})");
  EXPECT_EQ(cancel.value()->event, StreamEvent::kCancel);
  EXPECT_FALSE(cancel.value()->error.has_value());
}

TEST(StreamNotification, NotAStreamOrMalformed) {
  auto parse = [](const char* text) { return ParseStreamNotification(nlohmann::json::parse(text)); };
  EXPECT_FALSE(parse(R"({"id":1,"result":{"ok":null}})").value().has_value());
  EXPECT_FALSE(parse(R"({"method":"$sandbox.deno.watcher.restart","params":{"watcherId":"w"}})").value().has_value());
  EXPECT_FALSE(parse(R"({"method":"$sandbox.stream.enqueue","params":{"streamId":"1","data":""}})").has_value());
  EXPECT_FALSE(parse(R"({"method":"$sandbox.stream.enqueue","params":{"streamId":1,"data":"!!"}})").has_value());
  EXPECT_FALSE(parse(R"({"method":"$sandbox.stream.bogus","params":{"streamId":1}})").has_value());
}

TEST(StreamNotification, Outgoing) {
  EXPECT_EQ(MakeStreamNotification(StreamEvent::kStart, 0),
            R"({"jsonrpc":"2.0","method":"$sandbox.stream.start","params":{"streamId":0}})");
  EXPECT_EQ(MakeStreamNotification(StreamEvent::kEnqueue, 7, "abc"),
            R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":7,"data":"YWJj"}})");
  EXPECT_EQ(MakeRequest(0, "envToObject", nullptr), R"({"jsonrpc":"2.0","id":0,"method":"envToObject","params":{}})");
}

TEST(ProcessStatus, Decode) {
  auto ok = DecodeProcessStatus(nlohmann::json::parse(R"({"success":true,"code":0,"signal":null,"oom":null})"));
  ASSERT_TRUE(ok.has_value());
  EXPECT_TRUE(ok->success);
  EXPECT_EQ(ok->ExitCode(), 0);
  EXPECT_FALSE(ok->signal.has_value());

  auto killed = DecodeProcessStatus(
      nlohmann::json::parse(R"({"success":false,"code":137,"signal":"SIGKILL","oom":"high-confidence"})"));
  EXPECT_EQ(killed->signal, "SIGKILL");
  EXPECT_EQ(killed->oom, "high-confidence");
  EXPECT_EQ(killed->ExitCode(), 137);

  auto sig_only = DecodeProcessStatus(nlohmann::json::parse(R"({"success":false,"code":0,"signal":"SIGTERM","oom":null})"));
  EXPECT_EQ(sig_only->ExitCode(), 143);
  EXPECT_EQ(DecodeProcessStatus(nlohmann::json::parse(R"({"success":false,"code":3,"signal":null,"oom":null})"))->ExitCode(), 3);

  EXPECT_FALSE(DecodeProcessStatus(nlohmann::json::parse(R"({"code":0})")).has_value());
  EXPECT_FALSE(DecodeProcessStatus(nlohmann::json(nullptr)).has_value());
  EXPECT_EQ(SignalNumber("SIGKILL"), 9);
  EXPECT_EQ(SignalNumber("TERM"), 15);
  EXPECT_EQ(SignalNumber("SIGBREAK"), 0);
}

TEST(RpcResponse, Envelopes) {
  auto ok = DecodeRpcResponse(nlohmann::json::parse(R"({"jsonrpc":"2.0","id":0,"result":{"ok":{"pid":5}}})"));
  EXPECT_EQ(ok.value()["pid"], 5);
  auto null_ok = DecodeRpcResponse(nlohmann::json::parse(R"({"jsonrpc":"2.0","id":0,"result":{"ok":null}})"));
  EXPECT_TRUE(null_ok.value().is_null());
  auto app_err = DecodeRpcResponse(nlohmann::json::parse(
      R"({"id":1,"result":{"error":{"constructorName":"TypeError","message":"no such process","code":"ENOENT"}}})"));
  EXPECT_EQ(app_err.error().code, "ENOENT");
  EXPECT_EQ(app_err.error().kind, "TypeError");
  EXPECT_EQ(app_err.error().message, "no such process");
  auto no_code = DecodeRpcResponse(
      nlohmann::json::parse(R"({"id":1,"result":{"error":{"constructorName":"NotFound","message":"x","code":null}}})"));
  EXPECT_EQ(no_code.error().code, "NotFound");
  auto rpc = DecodeRpcResponse(nlohmann::json::parse(R"({"id":1,"error":{"code":-32601,"message":"Method not found"}})"));
  EXPECT_EQ(rpc.error().code, kRpcError);
  EXPECT_NE(rpc.error().message.find("-32601"), std::string::npos);
  auto both = DecodeRpcResponse(nlohmann::json::parse(R"({"id":1,"result":{"ok":1,"error":null}})"));
  EXPECT_EQ(both.value(), 1);
}

TEST(HttpError, JsonAndText) {
  auto e = DecodeHttpError(401, R"({"code":"INVALID_TOKEN","message":"bad token"})");
  EXPECT_EQ(e.code, "INVALID_TOKEN");
  EXPECT_EQ(e.message, "bad token");
  EXPECT_EQ(e.http_status, 401);
  EXPECT_EQ(e.ToString(), "bad token (status: 401, code: INVALID_TOKEN)");
  auto t = DecodeHttpError(502, "Bad Gateway");
  EXPECT_EQ(t.code, kHttpError);
  EXPECT_EQ(t.message, "Bad Gateway");
}

TEST(Time, FormatIso) { EXPECT_EQ(FormatIsoUtc(1795935478931), "2026-11-29T06:57:58.931Z"); }

TEST(ParseServerMessage, BulkFileReadMatchesPlainParse) {
  std::string b64 = Base64Encode(std::string(70'000, 'x'));
  std::string text = R"({"jsonrpc":"2.0","id":7,"result":{"ok":{"data":")" + b64 + R"("}}})";
  auto fast = ParseServerMessage(text);
  EXPECT_EQ(fast, nlohmann::json::parse(text));
  EXPECT_EQ(fast["result"]["ok"]["data"], b64);
}

TEST(ParseServerMessage, BulkEnqueueAndInlineOk) {
  std::string b64 = Base64Encode(std::string(5'000, 'y'));
  std::string enq = MakeStreamNotification(StreamEvent::kEnqueue, 12, std::string(5'000, 'y'));
  EXPECT_EQ(ParseServerMessage(enq), nlohmann::json::parse(enq));
  auto n = ParseStreamNotification(ParseServerMessage(enq));
  ASSERT_TRUE(n.has_value() && n->has_value());
  EXPECT_EQ((*n)->data, std::string(5'000, 'y'));
  std::string ok = R"({"jsonrpc":"2.0","id":1,"result":{"ok":")" + b64 + R"("}})";
  EXPECT_EQ(ParseServerMessage(ok), nlohmann::json::parse(ok));
}

TEST(ParseServerMessage, FallsBackOnEscapesShortValuesAndGarbage) {
  std::string escaped = R"({"id":1,"result":{"ok":")" + std::string(2'000, 'a') + R"(\n\"q\""}})";
  EXPECT_EQ(ParseServerMessage(escaped), nlohmann::json::parse(escaped));
  std::string small = R"({"id":1,"result":{"ok":{"data":"YWJj"}}})";
  EXPECT_EQ(ParseServerMessage(small), nlohmann::json::parse(small));
  // A "data" key mentioned inside another string stays text.
  std::string quoted = R"({"id":1,"result":{"error":{"message":"bad \"data\":\"x\" )" + std::string(2'000, 'm') +
                       R"(","constructorName":"Error"}}})";
  EXPECT_EQ(ParseServerMessage(quoted), nlohmann::json::parse(quoted));
  EXPECT_TRUE(ParseServerMessage(R"({"data":")" + std::string(2'000, 'a')).is_discarded());
  EXPECT_TRUE(ParseServerMessage("not json").is_discarded());
}

TEST(MakeStreamNotification, EnqueueIsValidJson) {
  auto j = nlohmann::json::parse(MakeStreamNotification(StreamEvent::kEnqueue, 3, "hello"));
  EXPECT_EQ(j["method"], "$sandbox.stream.enqueue");
  EXPECT_EQ(j["params"]["streamId"], 3);
  EXPECT_EQ(j["params"]["data"], Base64Encode("hello"));
  EXPECT_EQ(j["jsonrpc"], "2.0");
  EXPECT_FALSE(j.contains("id"));
}

}  // namespace
}  // namespace sandboxd::client
