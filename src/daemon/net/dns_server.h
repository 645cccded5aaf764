// The DNS server every sandbox's UDP/53 traffic is redirected to. It answers
// from the shared NameResolver, and only for names the sending sandbox's
// allowNet allows on some port. It is not a recursive resolver for arbitrary
// names: a name that is not allowed gets NXDOMAIN without any lookup, so DNS
// cannot carry data out of a sandbox (no query for "<secret>.evil.example"
// ever leaves the host).
//
// Answers, for a single question of class IN (packets parsed and built with
// ldns; nothing here reads DNS wire format by hand):
//   name not allowed          NXDOMAIN, no lookup
//   A                         the resolver's IPv4 addresses, minus those
//                             IsForbiddenByDefault() unless allowNet names
//                             them (AllowList::NamesAddress); none left or the
//                             name does not exist: NXDOMAIN; resolver failure:
//                             SERVFAIL. TTL min(answer_ttl, time the resolver
//                             keeps the answer pinned).
//   AAAA                      NOERROR, no answers: the sandbox network is
//                             IPv4-only, so clients fall back to A.
//   any other type            NOERROR, no answers (no lookup).
//   not exactly one question  FORMERR (question section not echoed)
//   class other than IN       REFUSED
//   opcode other than QUERY   NOTIMP
//   unparseable, or a response (QR set), or from an unknown sender: dropped
//   silently (never answer what might be a reflected response).
// Responses mirror the query's id, RD and question, set RA, carry no EDNS
// record and never exceed 512 bytes: answers that do not fit are dropped and
// TC is set. TCP/53 is not served.
//
// Threading: all work runs on an internal strand of the io_context given to
// Start(); stats() may be read from any thread. The resolver must outlive the
// server, or at least its Stop().
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/strand.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "common/error.h"
#include "daemon/net/allowlist.h"
#include "daemon/net/name_resolver.h"

namespace sandboxd::net {

class DnsServer : public std::enable_shared_from_this<DnsServer> {
 public:
  // Maps a query's source address to that sandbox's allowlist; null means the
  // sender is no known sandbox and the query is dropped. Called on the
  // server's strand for every datagram; must be cheap and non-blocking.
  using PolicyFn =
      std::function<std::shared_ptr<const AllowList>(const boost::asio::ip::address& src)>;
  using ReplyFn = std::function<void(std::vector<uint8_t> response)>;

  struct Options {
    boost::asio::ip::udp::endpoint bind;  // port 0 = ephemeral
    uint32_t answer_ttl = 30;             // seconds, upper bound for A answers
  };

  // Monotonic counters.
  struct Stats {
    std::atomic<uint64_t> queries{0};             // datagrams handled
    std::atomic<uint64_t> unknown_sender{0};      // dropped: PolicyFn returned null
    std::atomic<uint64_t> malformed{0};           // dropped, or FORMERR/NOTIMP/REFUSED
    std::atomic<uint64_t> denied{0};              // NXDOMAIN: name not allowed
    std::atomic<uint64_t> answered{0};            // replies for allowed names (any rcode)
    std::atomic<uint64_t> addresses_filtered{0};  // withheld by the address-class filter
    std::atomic<uint64_t> truncated{0};           // replies sent with TC
  };

  // Binds the socket (O_CLOEXEC) and starts receiving.
  static Result<std::shared_ptr<DnsServer>> Start(boost::asio::io_context& io, Options options,
                                                  NameResolver& resolver, PolicyFn policy);
  ~DnsServer();
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  boost::asio::ip::udp::endpoint local_endpoint() const { return local_; }
  uint16_t port() const { return local_.port(); }

  // Closes the socket; lookups in flight complete without replying. Safe to
  // call from any thread, more than once.
  void Stop();

  const Stats& stats() const { return stats_; }

  // Handles one datagram from `src` exactly as if it had arrived on the
  // socket: `reply` is called at most once, with the response to send back,
  // either before this returns or later on the strand (after a lookup). Must
  // be called on the strand, or in tests from the thread running the
  // io_context. Exposed for tests and fuzzing.
  void HandleDatagram(const boost::asio::ip::address& src, std::span<const uint8_t> data,
                      ReplyFn reply);

 private:
  DnsServer(boost::asio::io_context& io, Options options, NameResolver& resolver, PolicyFn policy);
  Status Bind();
  void Receive();

  Options options_;
  NameResolver& resolver_;
  PolicyFn policy_;
  Stats stats_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::ip::udp::socket socket_;
  boost::asio::ip::udp::endpoint local_;
  boost::asio::ip::udp::endpoint sender_;
  std::array<uint8_t, 65536> rx_;
  std::atomic<bool> stopped_{false};
};

}  // namespace sandboxd::net
