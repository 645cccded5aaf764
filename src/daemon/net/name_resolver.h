// The daemon's one resolver for sandbox traffic. The DNS server answers a
// sandbox's queries from it and the egress proxy resolves the names it
// connects to with it, so both see the same cached answer ("pinning"): within
// an answer's lifetime the address a sandbox was told is the address the
// proxy dials. The DNS server hands out TTLs no longer than the remaining
// cache lifetime (Answer::ttl), so a sandbox never holds an answer the proxy
// has already forgotten.
//
// Lookups run getaddrinfo() on a small private worker pool (getaddrinfo
// blocks; asio's async_resolve serialises all lookups on one thread), never on
// the caller's thread. Concurrent lookups of one name share one getaddrinfo
// call. Results are cached: positive answers for `positive_ttl`, failures for
// `negative_ttl`. The cache is bounded; when it is full, expired entries are
// dropped and, if that is not enough, every settled entry.
//
// Test seams: a hosts file (/etc/hosts format) whose names resolve only from
// it, and `hosts_only`, under which no name ever reaches getaddrinfo (the test
// daemon sets it so that tests never touch the real network); `lookup`
// replaces getaddrinfo and `now` the clock.
//
// Thread-safety: every public method may be called from any thread.
// Completion callbacks run on the executor given to Create(), never inside
// the Resolve() call. Destroy the resolver before that executor's
// io_context: the destructor waits for running getaddrinfo calls (whose
// callbacks are still posted; they do not touch the resolver) and drops,
// without calling them, the callbacks of lookups not yet started.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"

namespace sandboxd::net {

class NameResolver {
 public:
  using Clock = std::chrono::steady_clock;
  using Addresses = std::vector<boost::asio::ip::address>;
  // Upstream lookup of a valid, lower-case name without trailing dot. Runs on
  // a worker thread and may block. Error codes as for Resolve().
  using LookupFn = std::function<Result<Addresses>(const std::string& name)>;

  struct Options {
    std::chrono::seconds positive_ttl{60};
    std::chrono::seconds negative_ttl{5};
    std::string hosts_file;   // test-only: "" = none
    bool hosts_only = false;  // test-only: names not in the hosts file do not exist
    size_t threads = 4;       // getaddrinfo workers
    size_t max_cache_entries = 10000;
    LookupFn lookup;                         // empty = getaddrinfo
    std::function<Clock::time_point()> now;  // empty = steady_clock::now
  };

  struct Answer {
    Addresses addresses;       // never empty; IPv4 first, no duplicates
    std::chrono::seconds ttl;  // how much longer this answer stays pinned (>= 0)
  };

  // Monotonic counters, readable from any thread.
  struct Stats {
    std::atomic<uint64_t> resolves{0};  // Resolve()/ResolveWithTtl() calls
    std::atomic<uint64_t> hosts_file_hits{0};
    std::atomic<uint64_t> cache_hits{0};        // settled cache entry served
    std::atomic<uint64_t> coalesced{0};         // joined a lookup already in flight
    std::atomic<uint64_t> upstream_lookups{0};  // calls of getaddrinfo / Options::lookup
    std::atomic<uint64_t> failures{0};          // upstream lookups that failed
  };

  static Result<std::unique_ptr<NameResolver>> Create(boost::asio::any_io_executor executor,
                                                      Options options);
  ~NameResolver();
  NameResolver(const NameResolver&) = delete;
  NameResolver& operator=(const NameResolver&) = delete;

  // Resolves `host`: a name (any case, optional trailing dot) or an IP literal
  // (returned as is, without a lookup). Error codes: EINVAL the host is not a
  // valid name, ENOENT the name does not exist (or has no addresses, or is not
  // in the hosts file under hosts_only), EAGAIN temporary failure, EIO other.
  void Resolve(std::string host, std::function<void(Result<Addresses>)> done);
  void ResolveWithTtl(std::string host, std::function<void(Result<Answer>)> done);

  // Replaces the hosts file ("" = none). On error the previous one stays.
  // Every line: an address, then one or more names; '#' starts a comment.
  Status SetHostsFile(const std::string& path);

  // Forgets every settled cache entry (lookups in flight complete normally).
  void ClearCache();

  const Stats& stats() const { return stats_; }

 private:
  struct Entry {
    bool pending = true;
    Result<Addresses> result;
    Clock::time_point expires;
    std::vector<std::function<void(Result<Answer>)>> waiters;
  };

  NameResolver(boost::asio::any_io_executor executor, Options options);
  Clock::time_point Now() const;
  void Deliver(std::function<void(Result<Answer>)> done, Result<Answer> r);
  void RunLookup(const std::string& name);
  void EvictLocked(Clock::time_point now);

  boost::asio::any_io_executor executor_;
  Options options_;
  Stats stats_;

  std::mutex mu_;
  std::unordered_map<std::string, Addresses> hosts_;  // guarded by mu_
  std::unordered_map<std::string, Entry> cache_;      // guarded by mu_

  // Last member: destroyed (joined) first, while the state above is intact.
  boost::asio::thread_pool pool_;
};

}  // namespace sandboxd::net
