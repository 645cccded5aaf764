#include "daemon/net/replacer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

namespace sandboxd::net {
namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

// Obvious reference: at each position, the longest needle that matches.
std::string Naive(std::string_view in, const Pairs& pairs, size_t* count) {
  std::string out;
  size_t n = 0;
  for (size_t i = 0; i < in.size();) {
    const std::pair<std::string, std::string>* best = nullptr;
    for (const auto& p : pairs) {
      if (p.first.empty() || in.substr(i, p.first.size()) != p.first) continue;
      if (!best || p.first.size() > best->first.size()) best = &p;
    }
    if (best) {
      out += best->second;
      i += best->first.size();
      ++n;
    } else {
      out += in[i++];
    }
  }
  if (count) *count = n;
  return out;
}

std::string Streamed(std::string_view in, const Pairs& pairs, const std::vector<size_t>& cuts,
                     size_t* count) {
  Replacer r(pairs);
  std::string out;
  size_t pos = 0;
  for (size_t c : cuts) {
    r.Feed(in.substr(pos, c - pos), out);
    pos = c;
  }
  r.Feed(in.substr(pos), out);
  r.Finish(out);
  if (count) *count = r.replacements();
  return out;
}

TEST(Replacer, ReplacesEveryNeedle) {
  size_t n = 0;
  EXPECT_EQ(ReplaceAll("a PH1 b PH2 c PH1", {{"PH1", "one"}, {"PH2", "two"}}, &n),
            "a one b two c one");
  EXPECT_EQ(n, 3u);
}

TEST(Replacer, LeftmostThenLongestNonOverlapping) {
  EXPECT_EQ(ReplaceAll("abcd", {{"bc", "X"}, {"abc", "Y"}}), "Yd");
  EXPECT_EQ(ReplaceAll("abcd", {{"bcd", "X"}, {"ab", "Y"}}), "Ycd");
  EXPECT_EQ(ReplaceAll("aaaa", {{"aa", "b"}}), "bb");
  EXPECT_EQ(ReplaceAll("sbx_1234", {{"sbx_1", "A"}, {"sbx_12", "B"}}), "B34");
}

TEST(Replacer, IgnoresEmptyAndDuplicateNeedles) {
  Replacer r(Pairs{{"", "x"}, {"ab", "1"}, {"ab", "2"}});
  std::string out;
  r.Feed("abab", out);
  r.Finish(out);
  EXPECT_EQ(out, "11");
  EXPECT_EQ(r.replacements(0), 0u);
  EXPECT_EQ(r.replacements(1), 2u);
  EXPECT_EQ(r.replacements(2), 0u);
}

TEST(Replacer, IdentityPairsOnlyCount) {
  Replacer r(Pairs{{"secret", "secret"}});
  std::string out;
  r.Feed("a secret and a secr", out);
  r.Feed("et", out);
  r.Finish(out);
  EXPECT_EQ(out, "a secret and a secret");
  EXPECT_EQ(r.replacements(), 2u);
}

TEST(Replacer, NoNeedlesCopies) {
  Replacer r(Pairs{});
  std::string out;
  r.Feed("abc", out);
  EXPECT_EQ(out, "abc");
  EXPECT_EQ(r.pending(), 0u);
}

TEST(Replacer, NeedleSplitAcrossFeeds) {
  const std::string ph = "sbx_placeholder_0123456789abcdef0123456789abcdef";
  const std::string in = "Authorization: Bearer " + ph + "\r\n";
  for (size_t cut = 0; cut <= in.size(); ++cut) {
    size_t n = 0;
    EXPECT_EQ(Streamed(in, {{ph, "tok"}}, {cut}, &n), "Authorization: Bearer tok\r\n") << cut;
    EXPECT_EQ(n, 1u);
  }
}

TEST(Replacer, OneByteAtATime) {
  const Pairs pairs = {{"abcab", "1"}, {"bca", "2"}, {"cabx", "3"}};
  const std::string in = "xxabcabcabxabcaabcab";
  std::vector<size_t> cuts;
  for (size_t i = 1; i < in.size(); ++i) cuts.push_back(i);
  size_t a = 0, b = 0;
  EXPECT_EQ(Streamed(in, pairs, cuts, &a), Naive(in, pairs, &b));
  EXPECT_EQ(a, b);
}

TEST(Replacer, HoldsBackLessThanTheLongestNeedle) {
  Replacer r(Pairs{{"0123456789", "x"}, {"ab", "y"}});
  std::string out;
  for (int i = 0; i < 100; ++i) {
    r.Feed("zzzzzzzzzzzzzzzzzzzz012345678", out);
    EXPECT_LE(r.pending(), 9u);
  }
  r.Finish(out);
  EXPECT_EQ(out.size(), 100u * 29);
}

// Random texts over a small alphabet, so needles (with shared prefixes and
// self-overlap) occur often, cut at random points: streaming must agree
// with the one-shot reference.
TEST(Replacer, RandomSplitsMatchReference) {
  std::mt19937 rng(42);
  const std::string alphabet = "abc_";
  auto rand_str = [&](size_t len) {
    std::string s;
    for (size_t i = 0; i < len; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int iter = 0; iter < 2000; ++iter) {
    Pairs pairs;
    size_t k = 1 + rng() % 4;
    for (size_t i = 0; i < k; ++i) pairs.emplace_back(rand_str(1 + rng() % 6), rand_str(rng() % 4));
    std::string in = rand_str(rng() % 300);
    std::vector<size_t> cuts;
    size_t ncuts = rng() % 8;
    for (size_t i = 0; i < ncuts; ++i) cuts.push_back(in.empty() ? 0 : rng() % in.size());
    std::sort(cuts.begin(), cuts.end());
    size_t a = 0, b = 0;
    ASSERT_EQ(Streamed(in, pairs, cuts, &a), Naive(in, pairs, &b)) << "iteration " << iter;
    ASSERT_EQ(a, b);
  }
}

// Throughput (printed, never asserted): a 1 MiB buffer with two 48-byte
// placeholders, one-shot and in 64 KiB feeds; and redaction with
// token-sized values.
TEST(ReplacerBench, Throughput) {
  std::mt19937 rng(7);
  std::string buf(1 << 20, '\0');
  for (auto& c : buf) c = static_cast<char>(32 + rng() % 95);
  const std::string ph1 = "sbx_placeholder_00112233445566778899aabbccddeeff";
  const std::string ph2 = "sbx_placeholder_ffeeddccbbaa99887766554433221100";
  for (size_t pos = 1000; pos + 100 < buf.size(); pos += 100000) buf.replace(pos, ph1.size(), ph1);
  buf.replace(500000, ph2.size(), ph2);
  const Pairs to_values = {{ph1, "ghp_realtokenvalue0123456789abcdefABCD"},
                           {ph2, "sk-another-real-value-xyz"}};
  const Pairs to_placeholders = {{to_values[0].second, ph1}, {to_values[1].second, ph2}};

  auto measure = [&](const char* what, auto fn) {
    constexpr int kRounds = 200;
    fn();  // warm up
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; ++i) fn();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ replacer ] %-40s %6.2f GB/s\n", what, kRounds * double(buf.size()) / s / 1e9);
  };
  std::string out;
  size_t n = 0;
  measure("one-shot, 2 placeholders", [&] { out = ReplaceAll(buf, to_values, &n); });
  EXPECT_EQ(n, 12u);  // 11 of the first, 1 of the second
  std::string replaced = out;
  Replacer streaming(to_values);
  measure("64 KiB feeds, 2 placeholders", [&] {
    out.clear();
    for (size_t pos = 0; pos < buf.size(); pos += 65536) {
      streaming.Feed(std::string_view(buf).substr(pos, 65536), out);
    }
    streaming.Finish(out);
  });
  EXPECT_EQ(out, replaced);
  measure("one-shot redaction, 2 values", [&] { out = ReplaceAll(replaced, to_placeholders, &n); });
  EXPECT_EQ(out, buf);
}

}  // namespace
}  // namespace sandboxd::net
