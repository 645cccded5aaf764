#include "daemon/net/allowlist.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sandboxd::net {
namespace {

using boost::asio::ip::make_address;

AllowList MustParse(const std::vector<std::string>& entries) {
  auto l = AllowList::Parse(entries);
  EXPECT_TRUE(l.has_value()) << (l ? "" : l.error().message);
  return l ? std::move(*l) : AllowList();
}

std::string ParseError(std::string_view entry) {
  auto e = ParseAllowEntry(entry);
  EXPECT_FALSE(e.has_value()) << entry << " parsed as " << (e ? e->ToString() : "");
  return e ? "" : e.error().message;
}

TEST(AllowEntryTest, ParsesEveryForm) {
  struct Case {
    std::string in;
    AllowEntry::Kind kind;
    std::string host;
    std::string addr;
    uint16_t port;
    std::string canonical;
  };
  const std::vector<Case> cases = {
      {"example.com", AllowEntry::Kind::kName, "example.com", "", 0, "example.com"},
      {"Example.COM.", AllowEntry::Kind::kName, "example.com", "", 0, "example.com"},
      {"api.example.com:443", AllowEntry::Kind::kName, "api.example.com", "", 443,
       "api.example.com:443"},
      {"localhost", AllowEntry::Kind::kName, "localhost", "", 0, "localhost"},
      {"xn--bcher-kva.example", AllowEntry::Kind::kName, "xn--bcher-kva.example", "", 0,
       "xn--bcher-kva.example"},
      {"a-b.c0.example:65535", AllowEntry::Kind::kName, "a-b.c0.example", "", 65535,
       "a-b.c0.example:65535"},
      {"*.Example.com", AllowEntry::Kind::kWildcard, "example.com", "", 0, "*.example.com"},
      {"*.example.com.:8443", AllowEntry::Kind::kWildcard, "example.com", "", 8443,
       "*.example.com:8443"},
      {"192.0.2.1", AllowEntry::Kind::kAddress, "", "192.0.2.1", 0, "192.0.2.1"},
      {"10.0.0.1:22", AllowEntry::Kind::kAddress, "", "10.0.0.1", 22, "10.0.0.1:22"},
      {"[2001:DB8::1]", AllowEntry::Kind::kAddress, "", "2001:db8::1", 0, "[2001:db8::1]"},
      {"[::1]:8080", AllowEntry::Kind::kAddress, "", "::1", 8080, "[::1]:8080"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.in);
    auto e = ParseAllowEntry(c.in);
    ASSERT_TRUE(e.has_value()) << e.error().message;
    EXPECT_EQ(e->kind, c.kind);
    EXPECT_EQ(e->host, c.host);
    if (!c.addr.empty()) {
      EXPECT_EQ(e->address, make_address(c.addr));
    }
    EXPECT_EQ(e->port, c.port);
    EXPECT_EQ(e->ToString(), c.canonical);
    // The canonical form parses back to the same entry (EgressPolicy relies
    // on this when it merges lists).
    auto again = ParseAllowEntry(e->ToString());
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(*again, *e);
  }
}

TEST(AllowEntryTest, NameLengthLimits) {
  const std::string label63(63, 'a');
  EXPECT_TRUE(ParseAllowEntry(label63 + ".com").has_value());
  EXPECT_NE(ParseError(std::string(64, 'a') + ".com").find("longer than 63"), std::string::npos);

  // 4 * 63 + 3 dots = 255 > 253; 3 * 63 + 61 + 3 = 253 is fine.
  const std::string at_limit = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
  ASSERT_EQ(at_limit.size(), 253u);
  EXPECT_TRUE(ParseAllowEntry(at_limit).has_value());
  EXPECT_TRUE(ParseAllowEntry(at_limit + ".").has_value());  // trailing dot not counted
  EXPECT_NE(ParseError(at_limit + "b").find("longer than 253"), std::string::npos);
}

TEST(AllowEntryTest, RejectsWithMessagesNamingTheEntry) {
  struct Case {
    std::string in;
    std::string why;  // substring of the message
  };
  const std::vector<Case> cases = {
      {"", "empty entry"},
      {"exa mple.com", "whitespace"},
      {" example.com", "whitespace"},
      {"example.com\n", "whitespace"},
      {"bücher.example", "non-ASCII"},
      {"https://example.com", "URL"},
      {"example.com/path", "'/'"},
      {"example..com", "empty label"},
      {".example.com", "empty label"},
      {"example.com..", "empty label"},
      {".", "empty host name"},
      {"-example.com", "hyphen"},
      {"example-.com", "hyphen"},
      {"ex_ample.com", "invalid character"},
      {"ex@mple.com", "invalid character"},
      {"example.com:0", "1 to 65535"},
      {"example.com:65536", "1 to 65535"},
      {"example.com:-1", "1 to 65535"},
      {"example.com:+80", "1 to 65535"},
      {"example.com:http", "1 to 65535"},
      {"example.com:000080", "1 to 65535"},
      {"example.com:", "missing port"},
      {":443", "missing host"},
      {"*", "'*' alone"},
      {"*:443", "'*' alone"},
      {"*.", "'*' alone"},
      {"*example.com", "whole first label"},
      {"foo.*.example.com", "whole first label"},
      {"*.*.example.com", "whole first label"},
      {"**.example.com", "whole first label"},
      {"*.", "'*' alone"},
      {"2001:db8::1", "brackets"},
      {"::1", "brackets"},
      {"[2001:db8::1", "missing ']'"},
      {"[2001:db8::1]x", "after ']'"},
      {"[2001:db8::1]:0", "1 to 65535"},
      {"[192.0.2.1]", "not a valid IPv6"},
      {"[example.com]", "not a valid IPv6"},
      {"[fe80::1%eth0]", "zone id"},
      {"127.1", "numeric"},
      {"1.2.3.256", "numeric"},
      {"01.2.3.4", "numeric"},
      {"2130706433", "numeric"},
      {"0x7f.0.0.1", "numeric"},
      {"example.0x1f", "numeric"},
      {"*.10.0.0", "numeric"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.in);
    const std::string msg = ParseError(c.in);
    EXPECT_NE(msg.find(c.why), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("invalid allowNet entry \"", 0), 0u) << msg;
  }
}

TEST(AllowEntryTest, QuotesHostileEntriesSafely) {
  const std::string msg = ParseError(std::string("a\x01\"b\xff", 5));
  EXPECT_NE(msg.find(R"("a\x01\"b\xff")"), std::string::npos) << msg;
  const std::string long_msg = ParseError(std::string(5000, 'a'));
  EXPECT_LT(long_msg.size(), 300u);
  EXPECT_NE(long_msg.find("..."), std::string::npos);
}

TEST(AllowListTest, ParseNamesTheBadIndex) {
  auto l = AllowList::Parse({"example.com", "*.ok.example", "bad..name"});
  ASSERT_FALSE(l.has_value());
  EXPECT_EQ(l.error().message, "allowNet[2] \"bad..name\": host name has an empty label");
}

TEST(AllowListTest, EmptyAllowsNothing) {
  const AllowList l = MustParse({});
  EXPECT_TRUE(l.empty());
  EXPECT_FALSE(l.AllowsName("example.com", 443));
  EXPECT_FALSE(l.AllowsNameAnyPort("example.com"));
  EXPECT_FALSE(l.AllowsAddress(make_address("192.0.2.1"), 443));
  EXPECT_FALSE(AllowList().AllowsName("example.com", 443));
}

TEST(AllowListTest, ExactNames) {
  const AllowList l = MustParse({"example.com", "api.example.org:443"});
  EXPECT_TRUE(l.AllowsName("example.com", 80));
  EXPECT_TRUE(l.AllowsName("example.com", 65535));
  EXPECT_TRUE(l.AllowsName("EXAMPLE.com.", 443));
  EXPECT_FALSE(l.AllowsName("www.example.com", 443));  // not its subdomains
  EXPECT_FALSE(l.AllowsName("example.co", 443));
  EXPECT_FALSE(l.AllowsName("xexample.com", 443));
  EXPECT_FALSE(l.AllowsName("example.com.evil", 443));

  EXPECT_TRUE(l.AllowsName("api.example.org", 443));
  EXPECT_FALSE(l.AllowsName("api.example.org", 80));
  EXPECT_FALSE(l.AllowsName("api.example.org", 0));
  EXPECT_TRUE(l.AllowsNameAnyPort("api.example.org"));
  EXPECT_FALSE(l.AllowsNameAnyPort("example.org"));
}

TEST(AllowListTest, WildcardsMatchAnyDepthButNotTheApex) {
  const AllowList l = MustParse({"*.example.com", "*.svc.example.net:8443"});
  EXPECT_TRUE(l.AllowsName("a.example.com", 443));
  EXPECT_TRUE(l.AllowsName("a.b.c.example.com", 1));
  EXPECT_TRUE(l.AllowsName("A.Example.COM.", 443));
  EXPECT_FALSE(l.AllowsName("example.com", 443));  // the apex is not included
  EXPECT_FALSE(l.AllowsName("badexample.com", 443));
  EXPECT_FALSE(l.AllowsName(".example.com", 443));
  EXPECT_FALSE(l.AllowsName("example.com.evil.org", 443));

  EXPECT_TRUE(l.AllowsName("x.svc.example.net", 8443));
  EXPECT_FALSE(l.AllowsName("x.svc.example.net", 443));
  EXPECT_TRUE(l.AllowsNameAnyPort("x.svc.example.net"));
  EXPECT_FALSE(l.AllowsNameAnyPort("svc.example.net"));
}

TEST(AllowListTest, NamesNeverMatchAddressesAndViceVersa) {
  const AllowList l = MustParse({"*.example.com", "192.0.2.7:443", "[2001:db8::7]"});
  // An IP literal host is judged by the IP entries only.
  EXPECT_TRUE(l.AllowsName("192.0.2.7", 443));
  EXPECT_FALSE(l.AllowsName("192.0.2.7", 80));
  EXPECT_TRUE(l.AllowsName("[2001:db8::7]", 80));
  EXPECT_TRUE(l.AllowsName("2001:db8::7", 80));  // NormalizeHost's output form
  EXPECT_FALSE(l.AllowsName("192.0.2.8", 443));
  EXPECT_TRUE(l.AllowsNameAnyPort("192.0.2.7"));
  // Legacy numeric forms are not names and not addresses.
  EXPECT_FALSE(l.AllowsName("3221225991", 443));
  EXPECT_FALSE(l.AllowsName("192.0.519", 443));
}

TEST(AllowListTest, Addresses) {
  const AllowList l = MustParse({"192.0.2.1", "10.1.2.3:5432", "[2001:db8::1]:443", "[::1]"});
  EXPECT_TRUE(l.AllowsAddress(make_address("192.0.2.1"), 1));
  EXPECT_TRUE(l.AllowsAddress(make_address("::ffff:192.0.2.1"), 443));  // v4-mapped
  EXPECT_TRUE(l.AllowsAddress(make_address("10.1.2.3"), 5432));
  EXPECT_FALSE(l.AllowsAddress(make_address("10.1.2.3"), 5433));
  EXPECT_FALSE(l.AllowsAddress(make_address("10.1.2.4"), 5432));
  EXPECT_TRUE(l.AllowsAddress(make_address("2001:db8::1"), 443));
  EXPECT_FALSE(l.AllowsAddress(make_address("2001:db8::1"), 80));
  EXPECT_FALSE(l.AllowsAddress(make_address("192.0.2.1"), 0));

  EXPECT_TRUE(l.NamesAddress(make_address("10.1.2.3")));  // any port
  EXPECT_TRUE(l.NamesAddress(make_address("::1")));
  EXPECT_FALSE(l.NamesAddress(make_address("127.0.0.1")));  // ::1 is not 127.0.0.1
  EXPECT_FALSE(l.NamesAddress(make_address("10.1.2.0")));
}

TEST(AllowListTest, MappedEntryMatchesPlainV4) {
  const AllowList l = MustParse({"[::ffff:169.254.169.254]"});
  EXPECT_TRUE(l.NamesAddress(make_address("169.254.169.254")));
}

TEST(AllowListTest, NameEntriesSayNothingAboutAddresses) {
  const AllowList l = MustParse({"example.com"});
  EXPECT_FALSE(l.AllowsAddress(make_address("93.184.216.34"), 443));
  EXPECT_FALSE(l.NamesAddress(make_address("93.184.216.34")));
}

TEST(AllowListTest, ToStringsIsCanonicalAndOrdered) {
  const AllowList l =
      MustParse({"B.example.", "*.A.example:443", "[2001:DB8:0::1]:80", "192.0.2.1"});
  EXPECT_EQ(l.ToStrings(), (std::vector<std::string>{"b.example", "*.a.example:443",
                                                     "[2001:db8::1]:80", "192.0.2.1"}));
  auto again = AllowList::Parse(l.ToStrings());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->entries(), l.entries());
}

TEST(AllowListTest, InvalidHostsAreNeverAllowed) {
  const AllowList l = MustParse({"*.example.com"});
  for (std::string_view h : {"", ".", "a..example.com", "a_b.example.com", "*.example.com",
                             "a.example.com:443", "a.example.com/", "\xff.example.com"}) {
    EXPECT_FALSE(l.AllowsName(h, 443)) << h;
    EXPECT_FALSE(l.AllowsNameAnyPort(h)) << h;
  }
}

TEST(NormalizeHostTest, Accepts) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Example.COM", "example.com"},
      {"example.com.", "example.com"},
      {"example.com:8080", "example.com"},
      {"example.com.:443", "example.com"},
      {"192.0.2.1", "192.0.2.1"},
      {"192.0.2.1:80", "192.0.2.1"},
      {"[2001:DB8::1]", "2001:db8::1"},
      {"[2001:db8::1]:443", "2001:db8::1"},
      {"[::ffff:192.0.2.1]", "::ffff:192.0.2.1"},
  };
  for (const auto& [in, want] : cases) {
    auto got = NormalizeHost(in);
    ASSERT_TRUE(got.has_value()) << in << ": " << got.error().message;
    EXPECT_EQ(*got, want) << in;
  }
}

TEST(NormalizeHostTest, RejectsGarbage) {
  for (std::string_view h :
       std::initializer_list<std::string_view>{"",
                                               ":",
                                               ":80",
                                               "example.com:",
                                               "example.com:0",
                                               "example.com:99999",
                                               "example.com:80:80",
                                               "2001:db8::1",
                                               "[2001:db8::1",
                                               "[nope]",
                                               "exa mple.com",
                                               "exämple.com",
                                               "*.example.com",
                                               "*",
                                               "a..b",
                                               "-a.com",
                                               "a_b.com",
                                               "127.1",
                                               "0x7f000001",
                                               "2130706433",
                                               "user@host",
                                               "host/path",
                                               std::string_view("a\0b.com", 7)}) {
    auto got = NormalizeHost(h);
    EXPECT_FALSE(got.has_value()) << h << " -> " << (got ? *got : "");
    if (!got) {
      EXPECT_EQ(got.error().message.rfind("invalid host \"", 0), 0u) << got.error().message;
    }
  }
}

TEST(NormalizeHostTest, OutputIsAcceptedByAllowsName) {
  const AllowList l = MustParse({"example.com:443", "[2001:db8::1]:443"});
  for (std::string_view raw : {"EXAMPLE.com:443", "[2001:db8::1]:443"}) {
    auto n = NormalizeHost(raw);
    ASSERT_TRUE(n.has_value());
    EXPECT_TRUE(l.AllowsName(*n, 443)) << *n;
  }
}

}  // namespace
}  // namespace sandboxd::net
