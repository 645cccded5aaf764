#include "daemon/net/name_resolver.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

namespace sandboxd::net {
namespace {

using boost::asio::ip::make_address;
using namespace std::chrono_literals;
using Addresses = NameResolver::Addresses;

// A temporary hosts file, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    char tmpl[] = "/tmp/sbx-hosts-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    ::close(fd);
    path_ = tmpl;
    std::ofstream(path_) << contents;
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Fake upstream: counts calls, answers from a table, can hold calls until
// released (to observe coalescing and non-blocking behaviour).
class FakeUpstream {
 public:
  Result<Addresses> Lookup(const std::string& name) {
    std::unique_lock lock(mu_);
    ++calls_;
    names_.push_back(name);
    cv_.notify_all();
    cv_.wait(lock, [&] { return !hold_; });
    auto it = answers_.find(name);
    if (it == answers_.end()) return Fail(Error{ENOENT, name + ": no such name"});
    return it->second;
  }
  void Set(const std::string& name, Addresses a) {
    std::lock_guard lock(mu_);
    answers_[name] = std::move(a);
  }
  void Hold() {
    std::lock_guard lock(mu_);
    hold_ = true;
  }
  void Release() {
    std::lock_guard lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  void WaitForCalls(int n) {
    std::unique_lock lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, 5s, [&] { return calls_ >= n; }));
  }
  int calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::vector<std::string> names() {
    std::lock_guard lock(mu_);
    return names_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false;
  int calls_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, Addresses> answers_;
};

class NameResolverTest : public ::testing::Test {
 protected:
  std::unique_ptr<NameResolver> Make(NameResolver::Options o) {
    if (!o.lookup) o.lookup = [this](const std::string& n) { return upstream_.Lookup(n); };
    o.now = [this] { return base_ + std::chrono::seconds(clock_offset_s_.load()); };
    auto r = NameResolver::Create(io_.get_executor(), std::move(o));
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
    return r ? std::move(*r) : nullptr;
  }

  // Runs the io_context until `done` holds (at most 5 s).
  void RunUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done() && std::chrono::steady_clock::now() < deadline) io_.run_one_for(100ms);
    ASSERT_TRUE(done()) << "timed out";
  }

  Result<NameResolver::Answer> Resolve(NameResolver& r, const std::string& host) {
    std::optional<Result<NameResolver::Answer>> out;
    r.ResolveWithTtl(host, [&](Result<NameResolver::Answer> a) { out = std::move(a); });
    EXPECT_FALSE(out.has_value()) << "callback ran inside Resolve()";
    RunUntil([&] { return out.has_value(); });
    return out ? std::move(*out) : Fail(Error{ETIMEDOUT, "timed out"});
  }

  void Advance(std::chrono::seconds s) { clock_offset_s_ += s.count(); }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      io_.get_executor()};
  FakeUpstream upstream_;
  const std::chrono::steady_clock::time_point base_ = std::chrono::steady_clock::now();
  std::atomic<int64_t> clock_offset_s_{0};
};

TEST_F(NameResolverTest, HostsFileAnswersWithoutUpstream) {
  TempFile hosts(
      "# test upstreams\n"
      "2001:db8::5   api.test\n"
      "192.0.2.5     API.test.  www.api.test   # trailing comment\n"
      "\n"
      "   192.0.2.6  api.test\n"
      "10.0.0.9      private.test\n");
  auto r = Make({.hosts_file = hosts.path()});
  auto a = Resolve(*r, "api.test");
  ASSERT_TRUE(a.has_value()) << a.error().message;
  EXPECT_EQ(a->addresses, (Addresses{make_address("192.0.2.5"), make_address("192.0.2.6"),
                                     make_address("2001:db8::5")}));
  EXPECT_EQ(a->ttl, 60s);
  auto b = Resolve(*r, "WWW.Api.Test.");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->addresses, Addresses{make_address("192.0.2.5")});
  EXPECT_EQ(upstream_.calls(), 0);
  EXPECT_EQ(r->stats().hosts_file_hits, 2u);

  // Names not in the file still go upstream (hosts_only is off).
  upstream_.Set("other.test", {make_address("198.51.100.1")});
  auto c = Resolve(*r, "other.test");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(upstream_.calls(), 1);
}

TEST_F(NameResolverTest, HostsOnlyNeverGoesUpstream) {
  TempFile hosts("192.0.2.5 api.test\n");
  auto r = Make({.hosts_file = hosts.path(),
                 .hosts_only = true,
                 .lookup = [](const std::string& n) -> Result<Addresses> {
                   ADD_FAILURE() << "upstream lookup of " << n;
                   return Addresses{};
                 }});
  EXPECT_TRUE(Resolve(*r, "api.test").has_value());
  auto miss = Resolve(*r, "example.com");
  ASSERT_FALSE(miss.has_value());
  EXPECT_EQ(miss.error().code, ENOENT);
  EXPECT_EQ(r->stats().upstream_lookups, 0u);
}

TEST_F(NameResolverTest, SetHostsFileReplacesAndRejectsBadFiles) {
  TempFile first("192.0.2.1 a.test\n");
  TempFile second("192.0.2.2 b.test\n");
  auto r = Make({.hosts_file = first.path(), .hosts_only = true});
  ASSERT_TRUE(Resolve(*r, "a.test").has_value());
  ASSERT_TRUE(r->SetHostsFile(second.path()).has_value());
  EXPECT_FALSE(Resolve(*r, "a.test").has_value());
  EXPECT_TRUE(Resolve(*r, "b.test").has_value());

  TempFile bad_addr("192.0.2.1 ok.test\n300.1.1.1 bad.test\n");
  auto st = r->SetHostsFile(bad_addr.path());
  ASSERT_FALSE(st.has_value());
  EXPECT_NE(st.error().message.find(bad_addr.path() + ":2: \"300.1.1.1\" is not an IP address"),
            std::string::npos)
      << st.error().message;
  EXPECT_TRUE(Resolve(*r, "b.test").has_value());  // the previous file stays

  TempFile bad_name("192.0.2.1 bad_name.test\n");
  EXPECT_FALSE(r->SetHostsFile(bad_name.path()).has_value());
  TempFile no_name("192.0.2.1\n");
  EXPECT_FALSE(r->SetHostsFile(no_name.path()).has_value());
  EXPECT_FALSE(r->SetHostsFile("/nonexistent/hosts").has_value());
  EXPECT_FALSE(
      NameResolver::Create(io_.get_executor(), {.hosts_file = "/nonexistent/hosts"}).has_value());

  ASSERT_TRUE(r->SetHostsFile("").has_value());
  EXPECT_FALSE(Resolve(*r, "b.test").has_value());
}

TEST_F(NameResolverTest, LiteralsAndInvalidNamesNeverGoUpstream) {
  auto r = Make({});
  for (std::string_view lit : {"192.0.2.1", "2001:db8::1", "[2001:db8::1]"}) {
    auto a = Resolve(*r, std::string(lit));
    ASSERT_TRUE(a.has_value()) << lit;
    ASSERT_EQ(a->addresses.size(), 1u);
  }
  for (std::string_view bad :
       {"", "a..b", "bad_name.test", "example.com:443", "127.1", "*.x.test"}) {
    auto a = Resolve(*r, std::string(bad));
    ASSERT_FALSE(a.has_value()) << bad;
    EXPECT_EQ(a.error().code, EINVAL) << bad;
  }
  EXPECT_EQ(upstream_.calls(), 0);
}

TEST_F(NameResolverTest, CachesPositiveAnswersForTheTtl) {
  upstream_.Set("example.com", {make_address("2001:db8::1"), make_address("192.0.2.1"),
                                make_address("192.0.2.1"), make_address("192.0.2.2")});
  auto r = Make({.positive_ttl = 60s});
  auto a = Resolve(*r, "Example.com.");
  ASSERT_TRUE(a.has_value());
  // IPv4 first, duplicates gone, the name asked upstream normalised.
  EXPECT_EQ(a->addresses, (Addresses{make_address("192.0.2.1"), make_address("192.0.2.2"),
                                     make_address("2001:db8::1")}));
  EXPECT_EQ(upstream_.names(), std::vector<std::string>{"example.com"});

  // The proxy asking 20 s later gets the same (pinned) answer, 40 s to go.
  upstream_.Set("example.com", {make_address("198.51.100.99")});
  Advance(20s);
  auto b = Resolve(*r, "example.com");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->addresses, a->addresses);
  EXPECT_EQ(b->ttl, 40s);
  EXPECT_EQ(upstream_.calls(), 1);
  EXPECT_EQ(r->stats().cache_hits, 1u);

  Advance(40s);  // expired
  auto c = Resolve(*r, "example.com");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->addresses, Addresses{make_address("198.51.100.99")});
  EXPECT_EQ(upstream_.calls(), 2);
}

TEST_F(NameResolverTest, CachesFailuresForTheNegativeTtl) {
  auto r = Make({.negative_ttl = 5s});
  auto a = Resolve(*r, "missing.test");
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code, ENOENT);
  Advance(4s);
  EXPECT_FALSE(Resolve(*r, "missing.test").has_value());
  EXPECT_EQ(upstream_.calls(), 1);
  upstream_.Set("missing.test", {make_address("192.0.2.3")});
  Advance(1s);
  EXPECT_TRUE(Resolve(*r, "missing.test").has_value());
  EXPECT_EQ(upstream_.calls(), 2);
  EXPECT_EQ(r->stats().failures, 1u);
}

TEST_F(NameResolverTest, EmptyUpstreamAnswerIsNotFound) {
  upstream_.Set("empty.test", {});
  auto r = Make({});
  auto a = Resolve(*r, "empty.test");
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code, ENOENT);
}

TEST_F(NameResolverTest, ConcurrentLookupsCoalesceAndDoNotBlockTheCaller) {
  upstream_.Set("slow.test", {make_address("192.0.2.7")});
  upstream_.Hold();
  auto r = Make({});
  std::vector<Result<Addresses>> results;
  for (int i = 0; i < 5; ++i) {
    // Returns at once although the upstream is stuck.
    r->Resolve("slow.test", [&](Result<Addresses> a) { results.push_back(std::move(a)); });
  }
  upstream_.WaitForCalls(1);
  io_.poll();
  EXPECT_TRUE(results.empty());
  upstream_.Release();
  RunUntil([&] { return results.size() == 5; });
  for (const auto& a : results) {
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(*a, Addresses{make_address("192.0.2.7")});
  }
  EXPECT_EQ(upstream_.calls(), 1);
  EXPECT_EQ(r->stats().upstream_lookups, 1u);
  EXPECT_EQ(r->stats().coalesced, 4u);
  EXPECT_EQ(r->stats().resolves, 5u);
}

TEST_F(NameResolverTest, ResolveIsCallableFromManyThreads) {
  for (int i = 0; i < 8; ++i) {
    upstream_.Set("n" + std::to_string(i) + ".test",
                  {make_address("192.0.2." + std::to_string(i + 1))});
  }
  auto r = Make({});
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        r->Resolve("n" + std::to_string(i % 8) + ".test", [&](Result<Addresses> a) {
          if (a && a->size() == 1) ++ok;
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  RunUntil([&] { return ok == 200; });
  EXPECT_LE(upstream_.calls(), 8 * 4);  // coalesced or cached, never one per call
}

TEST_F(NameResolverTest, CacheIsBounded) {
  auto r = Make({.max_cache_entries = 4});
  for (int i = 0; i < 20; ++i) {
    upstream_.Set("h" + std::to_string(i) + ".test", {make_address("192.0.2.1")});
    ASSERT_TRUE(Resolve(*r, "h" + std::to_string(i) + ".test").has_value());
  }
  EXPECT_EQ(upstream_.calls(), 20);
  // Still answers (from a fresh lookup or the cache) after evictions.
  EXPECT_TRUE(Resolve(*r, "h19.test").has_value());
}

TEST_F(NameResolverTest, ClearCacheForcesANewLookup) {
  upstream_.Set("c.test", {make_address("192.0.2.1")});
  auto r = Make({});
  ASSERT_TRUE(Resolve(*r, "c.test").has_value());
  r->ClearCache();
  ASSERT_TRUE(Resolve(*r, "c.test").has_value());
  EXPECT_EQ(upstream_.calls(), 2);
}

TEST_F(NameResolverTest, DestroyWhileLookupInFlight) {
  // Mostly for ASan: the destructor waits for the running lookup, which must
  // not touch freed state, and the posted callback must not need the resolver.
  upstream_.Set("slow.test", {make_address("192.0.2.7")});
  upstream_.Hold();
  auto r = Make({.threads = 1});
  bool first_done = false;
  r->Resolve("slow.test", [&](Result<Addresses>) { first_done = true; });
  r->Resolve("queued.test", [&](Result<Addresses>) {});  // may be dropped or answered
  upstream_.WaitForCalls(1);
  std::thread destroyer([&] { r.reset(); });
  upstream_.Release();
  destroyer.join();
  io_.poll();
  EXPECT_TRUE(first_done);
}

}  // namespace
}  // namespace sandboxd::net
