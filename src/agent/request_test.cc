// Unit tests of control-request validation (the agent's untrusted edge).

#include "agent/request.h"

#include <unistd.h>

#include <cerrno>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace sandboxd::agent {
namespace {

using nlohmann::json;

TEST(ParseSpawnTest, AppliesDefaults) {
  auto req = ParseSpawn(json{{"argv", {"ls", "-l"}}});
  ASSERT_TRUE(req) << req.error().message;
  EXPECT_EQ(req->argv, (std::vector<std::string>{"ls", "-l"}));
  EXPECT_TRUE(req->env.empty());
  EXPECT_EQ(req->cwd, "/");
  EXPECT_EQ(req->uid, getuid());
  EXPECT_EQ(req->gid, getgid());
  EXPECT_EQ(req->stdin_channel, 0u);
  EXPECT_EQ(req->stdout_channel, 0u);
  EXPECT_EQ(req->stderr_channel, 0u);
}

TEST(ParseSpawnTest, ReadsAllFields) {
  auto req = ParseSpawn(json::parse(R"({"argv":["sh"],"env":["A=1"],"cwd":"/tmp","uid":1000,
      "gid":100,"stdin":1,"stdout":2,"stderr":4294967295})"));
  ASSERT_TRUE(req) << req.error().message;
  EXPECT_EQ(req->env, std::vector<std::string>{"A=1"});
  EXPECT_EQ(req->cwd, "/tmp");
  EXPECT_EQ(req->uid, 1000u);
  EXPECT_EQ(req->gid, 100u);
  EXPECT_EQ(req->stdin_channel, 1u);
  EXPECT_EQ(req->stdout_channel, 2u);
  EXPECT_EQ(req->stderr_channel, 4294967295u);
}

TEST(ParseSpawnTest, RejectsMalformedRequests) {
  for (const char* bad : {
           R"({})",
           R"({"argv":"sh"})",
           R"({"argv":[]})",
           R"({"argv":[""]})",
           R"({"argv":["sh",1]})",
           R"({"argv":["s\u0000h"]})",
           R"({"argv":["sh"],"env":"A=1"})",
           R"({"argv":["sh"],"env":[null]})",
           R"({"argv":["sh"],"cwd":""})",
           R"({"argv":["sh"],"cwd":7})",
           R"({"argv":["sh"],"uid":-1})",
           R"({"argv":["sh"],"uid":4294967295})",
           R"({"argv":["sh"],"gid":1.5})",
           R"({"argv":["sh"],"stdout":-2})",
           R"({"argv":["sh"],"stdout":4294967296})",
           R"({"argv":["sh"],"stdout":"1"})",
           R"({"argv":["sh"],"stdout":3,"stderr":3})",
           R"({"argv":["sh"],"stdin":3,"stdout":3})",
       }) {
    auto req = ParseSpawn(json::parse(bad));
    ASSERT_FALSE(req) << bad;
    EXPECT_EQ(req.error().code, EINVAL) << bad;
  }
}

TEST(ParseSpawnTest, ReadsPty) {
  auto req = ParseSpawn(json::parse(R"({"argv":["sh"],"stdin":1,"stdout":2,
      "pty":{"rows":24,"cols":80}})"));
  ASSERT_TRUE(req) << req.error().message;
  ASSERT_TRUE(req->pty.has_value());
  EXPECT_EQ(req->pty->rows, 24);
  EXPECT_EQ(req->pty->cols, 80);
  EXPECT_EQ(req->pty->term, "xterm-256color");
  req = ParseSpawn(json::parse(R"({"argv":["sh"],"stdout":2,
      "pty":{"rows":10000,"cols":1,"term":"vt100"}})"));
  ASSERT_TRUE(req) << req.error().message;
  EXPECT_EQ(req->pty->rows, 10000);
  EXPECT_EQ(req->pty->cols, 1);
  EXPECT_EQ(req->pty->term, "vt100");
  EXPECT_FALSE(ParseSpawn(json{{"argv", {"sh"}}})->pty.has_value());
}

TEST(ParseSpawnTest, RejectsMalformedPty) {
  for (const char* bad : {
           R"({"argv":["sh"],"stdout":2,"pty":true})",
           R"({"argv":["sh"],"stdout":2,"pty":null})",
           R"({"argv":["sh"],"stdout":2,"pty":{}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":24}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":0,"cols":80}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":24,"cols":10001}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":-1,"cols":80}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":24.5,"cols":80}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":"24","cols":80}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":24,"cols":80,"term":7}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":24,"cols":80,"term":""}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":24,"cols":80,"term":"a\u0000b"}})",
           R"({"argv":["sh"],"stdout":2,"pty":{"rows":24,"cols":80,"echo":false}})",
           // The terminal merges stdout and stderr; its output needs a channel.
           R"({"argv":["sh"],"stdout":2,"stderr":3,"pty":{"rows":24,"cols":80}})",
           R"({"argv":["sh"],"stdin":1,"pty":{"rows":24,"cols":80}})",
       }) {
    auto req = ParseSpawn(json::parse(bad));
    ASSERT_FALSE(req) << bad;
    EXPECT_EQ(req.error().code, EINVAL) << bad;
  }
  json pty = {{"rows", 1}, {"cols", 1}, {"term", std::string(129, 'x')}};
  auto long_term = ParseSpawn(json{{"argv", {"sh"}}, {"stdout", 2}, {"pty", pty}});
  ASSERT_FALSE(long_term);
  EXPECT_EQ(long_term.error().code, EINVAL);
}

TEST(ParseResizeTest, ValidatesPidAndSize) {
  auto ok = ParseResize(json{{"pid", 42}, {"rows", 30}, {"cols", 100}});
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->pid, 42);
  EXPECT_EQ(ok->rows, 30);
  EXPECT_EQ(ok->cols, 100);
  for (const char* bad : {R"({})", R"({"pid":42,"rows":30})", R"({"pid":0,"rows":30,"cols":100})",
                          R"({"pid":42,"rows":0,"cols":100})", R"({"pid":42,"rows":30,"cols":0})",
                          R"({"pid":42,"rows":10001,"cols":100})",
                          R"({"pid":42,"rows":30,"cols":65536})",
                          R"({"pid":"42","rows":30,"cols":100})"}) {
    auto req = ParseResize(json::parse(bad));
    ASSERT_FALSE(req) << bad;
    EXPECT_EQ(req.error().code, EINVAL) << bad;
  }
}

TEST(ParseKillTest, ValidatesPidAndSignal) {
  auto ok = ParseKill(json{{"pid", 42}, {"signal", 9}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->pid, 42);
  EXPECT_EQ(ok->signal, 9);
  EXPECT_TRUE(ParseKill(json{{"pid", 1}, {"signal", 64}}));
  for (const char* bad : {R"({})", R"({"pid":0,"signal":9})", R"({"pid":-5,"signal":9})",
                          R"({"pid":5,"signal":0})", R"({"pid":5,"signal":65})",
                          R"({"pid":5})", R"({"pid":"5","signal":9})",
                          R"({"pid":99999999999,"signal":9})"}) {
    auto req = ParseKill(json::parse(bad));
    ASSERT_FALSE(req) << bad;
    EXPECT_EQ(req.error().code, EINVAL) << bad;
  }
}

TEST(ParseNetConfigTest, AddressPrefixAndGatewayOfOneSubnet) {
  auto ok = ParseNetConfig(json{
      {"interface", "eth0"}, {"address", "10.89.0.2"}, {"prefix", 30}, {"gateway", "10.89.0.1"}});
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->interface, "eth0");
  EXPECT_EQ(ok->address, 0x0a590002u);
  EXPECT_EQ(ok->gateway, 0x0a590001u);
  EXPECT_EQ(ok->prefix, 30);
  for (
      const char* bad :
      {R"({})", R"({"interface":"eth0","address":"10.89.0.2","prefix":30})",
       R"({"interface":"eth0","address":"10.89.0.2","gateway":"10.89.0.1"})",
       R"({"interface":"eth0","address":"10.89.0.2","prefix":31,"gateway":"10.89.0.1"})",
       R"({"interface":"eth0","address":"10.89.0.2","prefix":0,"gateway":"10.89.0.1"})",
       R"({"interface":"eth0","address":"10.89.0.2","prefix":30,"gateway":"10.89.0.5"})",
       R"({"interface":"eth0","address":"10.89.0.2","prefix":30,"gateway":"10.89.0.2"})",
       R"({"interface":"eth0","address":"::1","prefix":30,"gateway":"10.89.0.1"})",
       R"({"interface":"eth0","address":"10.89.0.2 ","prefix":30,"gateway":"10.89.0.1"})",
       R"({"interface":"","address":"10.89.0.2","prefix":30,"gateway":"10.89.0.1"})",
       R"({"interface":"a/b","address":"10.89.0.2","prefix":30,"gateway":"10.89.0.1"})",
       R"({"interface":"0123456789abcdef","address":"10.89.0.2","prefix":30,"gateway":"10.89.0.1"})",
       R"({"interface":7,"address":"10.89.0.2","prefix":30,"gateway":"10.89.0.1"})"}) {
    auto req = ParseNetConfig(json::parse(bad));
    ASSERT_FALSE(req) << bad;
    EXPECT_EQ(req.error().code, EINVAL) << bad;
  }
}

}  // namespace
}  // namespace sandboxd::agent
