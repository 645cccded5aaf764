#include "daemon/net/name_resolver.h"

#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <fstream>
#include <optional>
#include <sstream>

#include "daemon/net/allowlist.h"

namespace sandboxd::net {

namespace ip = boost::asio::ip;

namespace {

// IPv4 first (the sandbox network is IPv4-only), then IPv6; order within a
// family kept; duplicates (getaddrinfo repeats addresses per socktype) gone.
NameResolver::Addresses Tidy(const NameResolver::Addresses& in) {
  NameResolver::Addresses out;
  for (bool v4 : {true, false}) {
    for (const auto& a : in) {
      if (a.is_v4() == v4 && std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
    }
  }
  return out;
}

Result<NameResolver::Addresses> GetAddrInfo(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;  // one result per address, not one per socktype
  addrinfo* res = nullptr;
  // The trailing dot makes the name absolute: without it the resolver would
  // also try it under the host's resolv.conf search domains, handing a
  // sandbox names that are private to the host's network. (It also means the
  // host's /etc/hosts does not apply, which is equally intended.)
  const std::string absolute = name + ".";
  const int rc = ::getaddrinfo(absolute.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    const std::string what = name + ": " + ::gai_strerror(rc);
    switch (rc) {
      case EAI_NONAME:
      case EAI_NODATA:
      case EAI_ADDRFAMILY:
        return Fail(Error{ENOENT, what});
      case EAI_AGAIN:
        return Fail(Error{EAGAIN, what});
      case EAI_SYSTEM:
        return FailErrno(name);
      default:
        return Fail(Error{EIO, what});
    }
  }
  NameResolver::Addresses out;
  for (addrinfo* p = res; p != nullptr; p = p->ai_next) {
    if (p->ai_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(p->ai_addr);
      out.push_back(ip::address_v4(ntohl(sin->sin_addr.s_addr)));
    } else if (p->ai_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(p->ai_addr);
      ip::address_v6::bytes_type b;
      std::copy_n(sin6->sin6_addr.s6_addr, 16, b.begin());
      out.push_back(ip::address_v6(b));
    }
  }
  ::freeaddrinfo(res);
  return out;
}

Result<std::unordered_map<std::string, NameResolver::Addresses>> LoadHostsFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) return FailErrno("hosts file " + path);
  std::unordered_map<std::string, NameResolver::Addresses> hosts;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string addr_text;
    if (!(fields >> addr_text)) continue;
    const auto where = [&] { return path + ":" + std::to_string(lineno) + ": "; };
    boost::system::error_code ec;
    const ip::address addr = ip::make_address(addr_text, ec);
    if (ec) return FailMsg(where() + "\"" + addr_text + "\" is not an IP address");
    std::string name;
    int names = 0;
    while (fields >> name) {
      auto norm = NormalizeHost(name);
      if (!norm || name.find(':') != std::string::npos) {
        return FailMsg(where() + "\"" + name + "\" is not a host name");
      }
      auto& list = hosts[*norm];
      if (std::find(list.begin(), list.end(), addr) == list.end()) list.push_back(addr);
      ++names;
    }
    if (names == 0) return FailMsg(where() + "address without a name");
  }
  if (in.bad()) return FailErrno("reading hosts file " + path);
  for (auto& [name, list] : hosts) list = Tidy(list);
  return hosts;
}

}  // namespace

Result<std::unique_ptr<NameResolver>> NameResolver::Create(boost::asio::any_io_executor executor,
                                                           Options options) {
  const std::string hosts_file = options.hosts_file;
  std::unique_ptr<NameResolver> r(new NameResolver(std::move(executor), std::move(options)));
  if (!hosts_file.empty()) SBX_TRY(r->SetHostsFile(hosts_file));
  return r;
}

NameResolver::NameResolver(boost::asio::any_io_executor executor, Options options)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      pool_(std::max<size_t>(options_.threads, 1)) {
  if (!options_.lookup) options_.lookup = GetAddrInfo;
}

NameResolver::~NameResolver() {
  // Lookups queued but not started are dropped; running ones finish (they
  // only touch members declared before pool_) and post to the executor.
  pool_.stop();
  pool_.join();
}

NameResolver::Clock::time_point NameResolver::Now() const {
  return options_.now ? options_.now() : Clock::now();
}

Status NameResolver::SetHostsFile(const std::string& path) {
  std::unordered_map<std::string, Addresses> hosts;
  if (!path.empty()) {
    auto loaded = LoadHostsFile(path);
    if (!loaded) return Fail(loaded.error());
    hosts = std::move(*loaded);
  }
  std::lock_guard lock(mu_);
  hosts_ = std::move(hosts);
  return {};
}

void NameResolver::ClearCache() {
  std::lock_guard lock(mu_);
  std::erase_if(cache_, [](const auto& kv) { return !kv.second.pending; });
}

void NameResolver::Deliver(std::function<void(Result<Answer>)> done, Result<Answer> r) {
  boost::asio::post(executor_,
                    [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
}

void NameResolver::Resolve(std::string host, std::function<void(Result<Addresses>)> done) {
  ResolveWithTtl(std::move(host), [done = std::move(done)](Result<Answer> r) {
    if (!r) return done(Fail(r.error()));
    done(std::move(r->addresses));
  });
}

void NameResolver::ResolveWithTtl(std::string host, std::function<void(Result<Answer>)> done) {
  stats_.resolves++;
  const auto literal = [](const std::string& s) -> std::optional<ip::address> {
    boost::system::error_code ec;
    const ip::address a = ip::make_address(s, ec);
    if (ec) return std::nullopt;
    return a;
  };
  if (auto a = literal(host)) return Deliver(std::move(done), Answer{{*a}, options_.positive_ttl});
  auto name = NormalizeHost(host);
  if (!name) return Deliver(std::move(done), Fail(Error{EINVAL, name.error().message}));
  // "[2001:db8::1]", "192.0.2.1."
  if (auto a = literal(*name)) return Deliver(std::move(done), Answer{{*a}, options_.positive_ttl});
  if (host.find(':') != std::string::npos) {
    return Deliver(std::move(done),
                   Fail(Error{EINVAL, "\"" + host + "\": a port is not part of a host name"}));
  }

  std::lock_guard lock(mu_);
  if (auto h = hosts_.find(*name); h != hosts_.end()) {
    stats_.hosts_file_hits++;
    return Deliver(std::move(done), Answer{h->second, options_.positive_ttl});
  }
  if (options_.hosts_only) {
    return Deliver(std::move(done), Fail(Error{ENOENT, *name + ": not in the hosts file"}));
  }
  const Clock::time_point now = Now();
  auto it = cache_.find(*name);
  if (it != cache_.end() && it->second.pending) {
    stats_.coalesced++;
    it->second.waiters.push_back(std::move(done));
    return;
  }
  if (it != cache_.end() && now < it->second.expires) {
    stats_.cache_hits++;
    const Entry& e = it->second;
    if (!e.result) return Deliver(std::move(done), Fail(e.result.error()));
    const auto left = std::chrono::ceil<std::chrono::seconds>(e.expires - now);
    return Deliver(std::move(done), Answer{*e.result, left});
  }
  if (it == cache_.end()) {
    EvictLocked(now);
    it = cache_.emplace(*name, Entry{}).first;
  }
  Entry& e = it->second;
  e.pending = true;
  e.waiters.push_back(std::move(done));
  stats_.upstream_lookups++;
  boost::asio::post(pool_, [this, n = *name] { RunLookup(n); });
}

void NameResolver::RunLookup(const std::string& name) {
  Result<Addresses> r = options_.lookup(name);
  if (r) {
    *r = Tidy(*r);
    if (r->empty()) r = Fail(Error{ENOENT, name + ": no addresses"});
  }
  if (!r) {
    stats_.failures++;
    spdlog::debug("resolver: {}: {}", name, r.error().message);
  }

  std::vector<std::function<void(Result<Answer>)>> waiters;
  {
    std::lock_guard lock(mu_);
    auto it = cache_.find(name);
    if (it == cache_.end()) return;  // cannot happen: pending entries are never evicted
    Entry& e = it->second;
    e.pending = false;
    e.result = r;
    e.expires = Now() + (r ? options_.positive_ttl : options_.negative_ttl);
    waiters = std::move(e.waiters);
    e.waiters.clear();
  }
  for (auto& w : waiters) {
    if (r) {
      Deliver(std::move(w), Answer{*r, options_.positive_ttl});
    } else {
      Deliver(std::move(w), Fail(r.error()));
    }
  }
}

void NameResolver::EvictLocked(Clock::time_point now) {
  if (cache_.size() < options_.max_cache_entries) return;
  std::erase_if(cache_,
                [&](const auto& kv) { return !kv.second.pending && kv.second.expires <= now; });
  if (cache_.size() < options_.max_cache_entries) return;
  spdlog::warn("resolver: cache full ({} names); dropping every settled entry", cache_.size());
  std::erase_if(cache_, [](const auto& kv) { return !kv.second.pending; });
}

}  // namespace sandboxd::net
