#include "client/network.h"

#include <gtest/gtest.h>

namespace sandboxd::client {
namespace {

nlohmann::json J(const char* text) { return nlohmann::json::parse(text); }

TEST(DecodeNetworkInfo, Enabled) {
  auto info = DecodeNetworkInfo(
      J(R"({"enabled":true,"address":"10.89.0.2","allowNet":["example.com","*.a.org:443"],
      "secrets":[{"name":"API_KEY","hosts":["api.example.com"]}],
      "stats":{"connectionsAllowed":3,"connectionsDenied":1,"requestsSubstituted":2,"requestsRefused":0,
               "dnsQueries":5}})"));
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_TRUE(info->enabled);
  EXPECT_EQ(info->address, "10.89.0.2");
  EXPECT_EQ(info->allow_net, (std::vector<std::string>{"example.com", "*.a.org:443"}));
  ASSERT_EQ(info->secrets.size(), 1u);
  EXPECT_EQ(info->secrets[0].name, "API_KEY");
  EXPECT_EQ(info->secrets[0].hosts, std::vector<std::string>{"api.example.com"});
  EXPECT_EQ(info->stats.connections_allowed, 3u);
  EXPECT_EQ(info->stats.connections_denied, 1u);
  EXPECT_EQ(info->stats.requests_substituted, 2u);
  EXPECT_EQ(info->stats.requests_refused, 0u);
  EXPECT_EQ(info->stats.dns_queries, 5u);
  EXPECT_EQ(info->raw["address"], "10.89.0.2");
}

TEST(DecodeNetworkInfo, Disabled) {
  auto info = DecodeNetworkInfo(J(R"({"enabled":false,"allowNet":[]})"));
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_FALSE(info->enabled);
  EXPECT_TRUE(info->address.empty());
  EXPECT_TRUE(info->allow_net.empty());
  EXPECT_TRUE(info->secrets.empty());
  EXPECT_EQ(info->stats.dns_queries, 0u);
}

TEST(DecodeNetworkInfo, MalformedIsAProtocolError) {
  for (const char* text : {
           R"([])",
           R"({"allowNet":[]})",
           R"({"enabled":"yes","allowNet":[]})",
           R"({"enabled":true})",
           R"({"enabled":true,"allowNet":["a",1]})",
           R"({"enabled":true,"allowNet":[],"address":7})",
           R"({"enabled":true,"allowNet":[],"secrets":{}})",
           R"({"enabled":true,"allowNet":[],"secrets":[{"name":"A"}]})",
           R"({"enabled":true,"allowNet":[],"secrets":[{"name":1,"hosts":[]}]})",
           R"({"enabled":true,"allowNet":[],"stats":[]})",
           R"({"enabled":true,"allowNet":[],"stats":{"dnsQueries":-1}})",
           R"({"enabled":true,"allowNet":[],"stats":{"dnsQueries":"5"}})",
       }) {
    auto info = DecodeNetworkInfo(J(text));
    ASSERT_FALSE(info.has_value()) << text;
    EXPECT_EQ(info.error().code, kProtocolError) << text;
  }
  // A body that was not JSON at all (parse(..., false) → discarded).
  auto discarded = DecodeNetworkInfo(nlohmann::json::parse("<html>", nullptr, false));
  ASSERT_FALSE(discarded.has_value());
  EXPECT_EQ(discarded.error().code, kProtocolError);
}

}  // namespace
}  // namespace sandboxd::client
