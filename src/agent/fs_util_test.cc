// Unit tests of the pure parts of the filesystem ops: dates, base64, path
// arithmetic, glob translation, param validation.

#include "agent/fs_util.h"

#include <gtest/gtest.h>

#include <regex>

#include "agent/fs_walk.h"

namespace sandboxd::agent::fs {
namespace {

using nlohmann::json;

TEST(FsUtil, IsoDateRoundTrip) {
  EXPECT_EQ(IsoDate(0, 0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(IsoDate(1704067200, 123456789), "2024-01-01T00:00:00.123Z");
  EXPECT_EQ(IsoDate(-1, 0), "1969-12-31T23:59:59.000Z");
  EXPECT_EQ(IsoDate(951782400, 0), "2000-02-29T00:00:00.000Z");
  auto ts = ParseIsoDate("2024-01-01T00:00:00.123Z");
  ASSERT_TRUE(ts);
  EXPECT_EQ(ts->tv_sec, 1704067200);
  EXPECT_EQ(ts->tv_nsec, 123000000);
  EXPECT_EQ(ParseIsoDate("2024-01-01")->tv_sec, 1704067200);
  EXPECT_EQ(ParseIsoDate("2024-01-01T01:00:00+01:00")->tv_sec, 1704067200);
  EXPECT_EQ(ParseIsoDate("+002024-01-01T00:00:00.000Z")->tv_sec, 1704067200);
  EXPECT_EQ(ParseIsoDate("1969-12-31T23:59:59.000Z")->tv_sec, -1);
  for (const char* bad : {"", "2024", "2024-13-01", "2023-02-29", "2024-01-01T25:00", "garbage",
                          "2024-01-01T00:00:00.000Zjunk"}) {
    EXPECT_FALSE(ParseIsoDate(bad)) << bad;
  }
}

TEST(FsUtil, Base64) {
  for (const std::string& s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba",
                                                       "foobar", std::string("\0\xff\x10", 3)}) {
    auto back = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(back) << s;
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_FALSE(Base64Decode("Zm9"));
  EXPECT_FALSE(Base64Decode("Zm9v!mFy"));
  EXPECT_FALSE(Base64Decode("Z=9v"));
}

TEST(FsUtil, Paths) {
  EXPECT_EQ(NormalizePath("/a//b/./c/../d"), "/a/b/d");
  EXPECT_EQ(NormalizePath("a/../../b"), "../b");
  EXPECT_EQ(NormalizePath("/.."), "/");
  EXPECT_EQ(NormalizePath("a/"), "a/");
  EXPECT_EQ(NormalizePath(""), ".");
  EXPECT_EQ(JoinPath("/a/", "b"), "/a/b");
  EXPECT_EQ(BaseName("/a/b/"), "b");
  EXPECT_EQ(BaseName("c"), "c");
  Cred cred{1, 1, "/home/app"};
  EXPECT_EQ(Resolve(cred, "x/y"), "/home/app/x/y");
  EXPECT_EQ(Resolve(cred, "/x"), "/x");
  EXPECT_EQ(Resolve(cred, ""), "");
}

bool GlobMatches(const std::string& glob, const std::string& path, bool extended = true,
                 bool globstar = true) {
  return std::regex_search(
      path, std::regex(GlobToRegExpSource(glob, extended, globstar), std::regex::ECMAScript));
}

TEST(FsUtil, GlobToRegExp) {
  EXPECT_TRUE(GlobMatches("*.txt", "a.txt"));
  EXPECT_FALSE(GlobMatches("*.txt", "a.txt.bak"));
  EXPECT_FALSE(GlobMatches("*.txt", "d/a.txt"));
  EXPECT_TRUE(GlobMatches("?.md", "x.md"));
  EXPECT_TRUE(GlobMatches("[ab]c", "bc"));
  EXPECT_FALSE(GlobMatches("[!ab]c", "bc"));
  EXPECT_TRUE(GlobMatches("[[:digit:]]x", "7x"));
  EXPECT_TRUE(GlobMatches("{foo,bar}.js", "bar.js"));
  EXPECT_FALSE(GlobMatches("{foo,bar}.js", "baz.js"));
  EXPECT_TRUE(GlobMatches("/r/**/*.ts", "/r/a/b/c.ts"));
  EXPECT_TRUE(GlobMatches("/r/**/*.ts", "/r/c.ts"));
  EXPECT_TRUE(GlobMatches("/r/**", "/r/a/b"));
  EXPECT_TRUE(GlobMatches("+(a|b).c", "abab.c"));
  EXPECT_TRUE(GlobMatches("!(x).c", "y.c"));
  EXPECT_FALSE(GlobMatches("!(x).c", "x.c"));
  EXPECT_TRUE(GlobMatches("a\\*b", "a*b"));
  EXPECT_FALSE(GlobMatches("a\\*b", "axb"));
  EXPECT_TRUE(GlobMatches("{unclosed", "{unclosed"));  // taken literally
  EXPECT_FALSE(GlobMatches("", ""));
}

TEST(FsUtil, IsGlob) {
  EXPECT_TRUE(IsGlob("*.ts"));
  EXPECT_TRUE(IsGlob("a?"));
  EXPECT_TRUE(IsGlob("[ab]"));
  EXPECT_TRUE(IsGlob("{a,b}"));
  EXPECT_TRUE(IsGlob("!(x)"));
  EXPECT_FALSE(IsGlob("plain"));
  EXPECT_FALSE(IsGlob("a.b-c"));
  EXPECT_FALSE(IsGlob("\\*"));
  EXPECT_FALSE(IsGlob(""));
}

TEST(FsUtil, ParamsRejectBadTypes) {
  json j = {{"path", "a\0b"}, {"n", 1.5}, {"m", 3.0}, {"b", "yes"}, {"o", 3}};
  j["path"] = std::string("a\0b", 3);
  Params p(j);
  EXPECT_EQ(p.Path("path").error().code, EINVAL);
  EXPECT_EQ(p.Path("missing").error().code, EINVAL);
  EXPECT_EQ(p.OptInt("n", 0, 10).error().code, EINVAL);
  EXPECT_EQ(**p.OptInt("m", 0, 10), 3);
  EXPECT_EQ(p.OptInt("m", 0, 2).error().code, EINVAL);
  EXPECT_EQ(p.Bool("b", false).error().code, EINVAL);
  EXPECT_EQ(p.Object("o").error().code, EINVAL);
  EXPECT_EQ(Params(json{{"path", std::string(5000, 'a')}}).Path("path").error().code, EINVAL);
  EXPECT_FALSE(ParseCred(json{{"gid", 0}, {"cwd", "/"}}));  // no uid: never root by default
  EXPECT_FALSE(ParseCred(json{{"uid", 0}, {"gid", 0}, {"cwd", "rel"}}));
  EXPECT_TRUE(ParseCred(json{{"uid", 1000}, {"gid", 1000}, {"cwd", "/home/app"}}));
}

}  // namespace
}  // namespace sandboxd::agent::fs
