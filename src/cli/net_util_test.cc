#include "cli/net_util.h"

#include <gtest/gtest.h>

#include <map>

namespace sandboxd::cli {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ParseSecretArg, InlineValue) {
  auto s = ParseSecretArg("API_KEY=s3cr3t@api.example.com", FakeEnv({}));
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->name, "API_KEY");
  EXPECT_EQ(s->value, "s3cr3t");
  EXPECT_EQ(s->hosts, std::vector<std::string>{"api.example.com"});
}

TEST(ParseSecretArg, LastAtSeparatesHostsSoValuesMayContainAtAndEquals) {
  auto s = ParseSecretArg("TOKEN=user@pa=ss@a.example.com,*.b.example.org:443", FakeEnv({}));
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->value, "user@pa=ss");
  EXPECT_EQ(s->hosts, (std::vector<std::string>{"a.example.com", "*.b.example.org:443"}));
}

TEST(ParseSecretArg, ValueFromEnvironment) {
  auto s =
      ParseSecretArg("GH_TOKEN@api.github.com,[::1]:443", FakeEnv({{"GH_TOKEN", "ghp_x=y@z"}}));
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->name, "GH_TOKEN");
  EXPECT_EQ(s->value, "ghp_x=y@z");
  EXPECT_EQ(s->hosts, (std::vector<std::string>{"api.github.com", "[::1]:443"}));
}

TEST(ParseSecretArg, Refusals) {
  auto env = FakeEnv({{"EMPTY", ""}});
  for (const char* arg : {
           "",            // nothing
           "justavalue",  // neither '=' nor '@'
           "=v@h",        // no name
           "1ABC=v@h",    // name starts with a digit
           "MY-KEY=v@h",  // not an env name
           "KEY=value",   // no hosts
           "KEY=v@",      // empty host list
           "KEY=v@a,,b",  // empty host
           "KEY=v@a,",    // trailing comma
           "KEY=@h",      // empty value
           "UNSET@h",     // not in the environment
           "EMPTY@h",     // empty in the environment
       }) {
    auto s = ParseSecretArg(arg, env);
    EXPECT_FALSE(s.has_value()) << arg;
    if (!s) {
      EXPECT_EQ(s.error().code, client::kInvalidArgument) << arg;
    }
  }
}

TEST(ParseSecretArg, ErrorsNeverShowTheValue) {
  for (const char* arg :
       {"KEY=hunter2", "KEY=hunter2@", "KEY=hunter2@a,,b", "hunter2", "BAD-NAME=hunter2@h"}) {
    auto s = ParseSecretArg(arg, FakeEnv({}));
    ASSERT_FALSE(s.has_value()) << arg;
    EXPECT_EQ(s.error().message.find("hunter2"), std::string::npos) << s.error().message;
  }
}

TEST(FormatNetworkInfo, Enabled) {
  client::NetworkInfo info;
  info.enabled = true;
  info.address = "10.89.0.2";
  info.allow_net = {"example.com", "*.example.org:443"};
  info.secrets = {{"API_KEY", {"api.example.com", "x.example"}}};
  info.stats = {3, 1, 2, 0, 5};
  EXPECT_EQ(FormatNetworkInfo(info),
            "network:     on (address 10.89.0.2)\n"
            "allow-net:   example.com\n"
            "             *.example.org:443\n"
            "secrets:     API_KEY -> api.example.com, x.example\n"
            "connections: 3 allowed, 1 denied\n"
            "requests:    2 with secrets substituted, 0 refused\n"
            "dns queries: 5\n");
}

TEST(FormatNetworkInfo, EmptyListsAndDisabled) {
  client::NetworkInfo info;
  info.enabled = true;
  info.address = "10.89.0.6";
  std::string text = FormatNetworkInfo(info);
  EXPECT_NE(text.find("allow-net:   (none)\n"), std::string::npos) << text;
  EXPECT_NE(text.find("secrets:     (none)\n"), std::string::npos) << text;
  info.enabled = false;
  EXPECT_EQ(FormatNetworkInfo(info),
            "network:     off (the server runs sandboxes without outbound networking)\n");
}

}  // namespace
}  // namespace sandboxd::cli
