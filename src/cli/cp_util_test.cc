#include "cli/cp_util.h"

#include <gtest/gtest.h>

namespace sandboxd::cli {
namespace {

constexpr char kId[] = "sbx_ord_bd87cdmqwzd3ee32pcy4";

TEST(ParseLocation, RemoteWithAbsolutePath) {
  Location l = ParseLocation(std::string(kId) + ":/app/x.txt");
  ASSERT_TRUE(l.remote());
  EXPECT_EQ(*l.sandbox, kId);
  EXPECT_EQ(l.path, "/app/x.txt");
}

TEST(ParseLocation, RemoteRelativeAndEmpty) {
  EXPECT_EQ(ParseLocation(std::string(kId) + ":out").path, "out");
  Location l = ParseLocation(std::string(kId) + ":");
  ASSERT_TRUE(l.remote());
  EXPECT_EQ(l.path, ".");
}

TEST(ParseLocation, PathAfterColonKeepsColons) {
  EXPECT_EQ(ParseLocation(std::string(kId) + ":/a:b").path, "/a:b");
}

TEST(ParseLocation, LocalPaths) {
  for (const char* p : {"./dir", "/abs/path", "a:b", "./sbx_ord_bd87cdmqwzd3ee32pcy4:/x", "C:/x", "file.txt", "."}) {
    Location l = ParseLocation(p);
    EXPECT_FALSE(l.remote()) << p;
    EXPECT_EQ(l.path, p);
  }
}

TEST(HasGlob, Detects) {
  EXPECT_TRUE(HasGlob("/app/*.txt"));
  EXPECT_TRUE(HasGlob("/app/file?.txt"));
  EXPECT_TRUE(HasGlob("/app/[ab].txt"));
  EXPECT_TRUE(HasGlob("/app/**/x"));
  EXPECT_FALSE(HasGlob("/app/plain.txt"));
  EXPECT_FALSE(HasGlob("/app/\\*.txt"));
  EXPECT_FALSE(HasGlob(""));
}

TEST(Paths, BaseName) {
  EXPECT_EQ(BaseName("/a/b"), "b");
  EXPECT_EQ(BaseName("/a/b/"), "b");
  EXPECT_EQ(BaseName("b"), "b");
  EXPECT_EQ(BaseName("/"), "/");
  EXPECT_EQ(BaseName("./dir"), "dir");
}

TEST(Paths, JoinPath) {
  EXPECT_EQ(JoinPath("/a", "b"), "/a/b");
  EXPECT_EQ(JoinPath("/a/", "b"), "/a/b");
  EXPECT_EQ(JoinPath("/", "b"), "/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(JoinPath("a", "/b"), "a/b");
}

TEST(Paths, RelativeTo) {
  EXPECT_EQ(RelativeTo("/r", "/r"), "");
  EXPECT_EQ(RelativeTo("/r", "/r/x/y"), "x/y");
  EXPECT_EQ(RelativeTo("/r/", "/r/x"), "x");
  EXPECT_EQ(RelativeTo("/", "/x"), "x");
  EXPECT_EQ(RelativeTo("/r", "/rx"), std::nullopt);
  EXPECT_EQ(RelativeTo("/r", "/s/x"), std::nullopt);
}

TEST(Progress, FormatBytes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.0 KiB");
  EXPECT_EQ(FormatBytes(1536 * 1024), "1.5 MiB");
  EXPECT_EQ(FormatBytes(2ull << 30), "2.0 GiB");
}

TEST(Progress, Line) {
  std::string s = FormatProgress(64ull << 20, 256ull << 20, 2.0);
  EXPECT_NE(s.find("64.0 MiB"), std::string::npos) << s;
  EXPECT_NE(s.find("256.0 MiB"), std::string::npos) << s;
  EXPECT_NE(s.find("25.0%"), std::string::npos) << s;
  EXPECT_NE(s.find("32.0 MiB/s"), std::string::npos) << s;
  EXPECT_NE(s.find("ETA 0:06"), std::string::npos) << s;
  EXPECT_LE(s.size(), 80u);
}

TEST(Progress, NoRateYet) {
  std::string s = FormatProgress(0, 10ull << 20, 0.0);
  EXPECT_NE(s.find("ETA --:--"), std::string::npos) << s;
  EXPECT_NE(s.find("0.0%"), std::string::npos) << s;
}

TEST(Progress, LongEtaHasHours) {
  std::string s = FormatProgress(1 << 20, 10ull << 30, 1.0);  // 1 MiB/s, ~10239 s left
  EXPECT_NE(s.find("ETA 2:50:39"), std::string::npos) << s;
}

TEST(Progress, Threshold) {
  EXPECT_FALSE(ShouldShowProgress(false, 1ull << 30));
  EXPECT_FALSE(ShouldShowProgress(true, 1 << 20));
  EXPECT_TRUE(ShouldShowProgress(true, 64ull << 20));
}

}  // namespace
}  // namespace sandboxd::cli
