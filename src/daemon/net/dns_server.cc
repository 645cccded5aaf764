#include "daemon/net/dns_server.h"

// ldns/common.h #defines bool, true and false unless stdbool.h came first.
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers)
//
#include <ldns/ldns.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <cstdlib>
#include <optional>
#include <string>

#include "common/fd.h"
#include "daemon/net/addr_class.h"

namespace sandboxd::net {

namespace ip = boost::asio::ip;
using boost::asio::ip::udp;

namespace {

constexpr size_t kDnsHeaderSize = 12;
constexpr size_t kMaxUdpResponse = 512;  // RFC 1035; we never use EDNS sizes
// 16 bytes per compressed A record: more than this never fits in 512 bytes.
constexpr size_t kMaxAnswers = 32;

struct PktFree {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using PktPtr = std::unique_ptr<ldns_pkt, PktFree>;
struct RrFree {
  void operator()(ldns_rr* r) const { ldns_rr_free(r); }
};
using RrPtr = std::unique_ptr<ldns_rr, RrFree>;
struct CFree {
  void operator()(void* p) const { std::free(p); }
};

// What a response needs from its query.
struct Query {
  uint16_t id = 0;
  bool rd = false;
  RrPtr question;    // null: the question section is not echoed
  std::string name;  // presentation form, "example.com." (escaped by ldns)
  std::string type;  // "A", "AAAA", "TYPE65280"
};

std::string OwnedStr(char* s) {
  std::unique_ptr<char, CFree> owned(s);
  return owned ? std::string(owned.get()) : std::string();
}

std::string_view RcodeName(ldns_pkt_rcode rcode) {
  switch (rcode) {
    case LDNS_RCODE_NOERROR:
      return "NOERROR";
    case LDNS_RCODE_FORMERR:
      return "FORMERR";
    case LDNS_RCODE_SERVFAIL:
      return "SERVFAIL";
    case LDNS_RCODE_NXDOMAIN:
      return "NXDOMAIN";
    case LDNS_RCODE_NOTIMPL:
      return "NOTIMP";
    case LDNS_RCODE_REFUSED:
      return "REFUSED";
    default:
      return "rcode?";
  }
}

// One encoding attempt with exactly these answers. nullopt: out of memory.
std::optional<std::vector<uint8_t>> Encode(const Query& q, ldns_pkt_rcode rcode,
                                           std::span<const ip::address_v4> answers, uint32_t ttl,
                                           bool tc) {
  PktPtr p(ldns_pkt_new());
  if (!p) return std::nullopt;
  ldns_pkt_set_id(p.get(), q.id);
  ldns_pkt_set_qr(p.get(), true);
  ldns_pkt_set_opcode(p.get(), LDNS_PACKET_QUERY);
  ldns_pkt_set_rd(p.get(), q.rd);
  ldns_pkt_set_ra(p.get(), true);
  ldns_pkt_set_tc(p.get(), tc);
  ldns_pkt_set_rcode(p.get(), static_cast<uint8_t>(rcode));
  if (q.question) {
    RrPtr copy(ldns_rr_clone(q.question.get()));
    if (!copy || !ldns_pkt_push_rr(p.get(), LDNS_SECTION_QUESTION, copy.get())) return std::nullopt;
    copy.release();  // owned by the packet now
  }
  for (const ip::address_v4& a : answers) {
    RrPtr rr(ldns_rr_new());
    if (!rr) return std::nullopt;
    // Owner: the question's name as sent (keeps 0x20 case randomisation).
    ldns_rdf* owner = ldns_rdf_clone(ldns_rr_owner(q.question.get()));
    if (!owner) return std::nullopt;
    ldns_rr_set_owner(rr.get(), owner);
    ldns_rr_set_type(rr.get(), LDNS_RR_TYPE_A);
    ldns_rr_set_class(rr.get(), LDNS_RR_CLASS_IN);
    ldns_rr_set_ttl(rr.get(), ttl);
    const auto bytes = a.to_bytes();
    ldns_rdf* rdata = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_A, bytes.size(), bytes.data());
    if (!rdata) return std::nullopt;
    if (!ldns_rr_push_rdf(rr.get(), rdata)) {
      ldns_rdf_deep_free(rdata);
      return std::nullopt;
    }
    if (!ldns_pkt_push_rr(p.get(), LDNS_SECTION_ANSWER, rr.get())) return std::nullopt;
    rr.release();
  }
  uint8_t* wire = nullptr;
  size_t size = 0;
  const ldns_status st = ldns_pkt2wire(&wire, p.get(), &size);
  std::unique_ptr<uint8_t, CFree> owned(wire);
  if (st != LDNS_STATUS_OK || !owned) return std::nullopt;
  return std::vector<uint8_t>(owned.get(), owned.get() + size);
}

// The response, at most 512 bytes: answers that do not fit are dropped and TC
// is set. Empty: could not be built (out of memory).
std::vector<uint8_t> BuildResponse(const Query& q, ldns_pkt_rcode rcode,
                                   std::span<const ip::address_v4> answers, uint32_t ttl,
                                   bool* truncated) {
  size_t n = std::min(answers.size(), kMaxAnswers);
  while (true) {
    const bool tc = n < answers.size();
    auto wire = Encode(q, rcode, answers.first(n), ttl, tc);
    if (!wire) return {};
    if (wire->size() <= kMaxUdpResponse || n == 0) {
      *truncated = tc;
      // Without answers a response is header + one question (<= 12 + 255 + 4).
      return std::move(*wire);
    }
    --n;
  }
}

// Builds the response and hands it to `reply`; an unbuildable response (out
// of memory) leaves the query unanswered and the client retries.
void Respond(DnsServer::Stats& stats, const std::string& from, const Query& q, ldns_pkt_rcode rcode,
             std::span<const ip::address_v4> answers, uint32_t ttl,
             const DnsServer::ReplyFn& reply) {
  bool truncated = false;
  std::vector<uint8_t> wire = BuildResponse(q, rcode, answers, ttl, &truncated);
  if (wire.empty()) {
    spdlog::warn("dns {}: could not build a response", from);
    return;
  }
  if (truncated) stats.truncated++;
  reply(std::move(wire));
}

}  // namespace

Result<std::shared_ptr<DnsServer>> DnsServer::Start(boost::asio::io_context& io, Options options,
                                                    NameResolver& resolver, PolicyFn policy) {
  std::shared_ptr<DnsServer> s(new DnsServer(io, std::move(options), resolver, std::move(policy)));
  SBX_TRY(s->Bind());
  boost::asio::post(s->strand_, [s] { s->Receive(); });
  spdlog::info("dns: listening on {}:{}", s->local_.address().to_string(), s->local_.port());
  return s;
}

DnsServer::DnsServer(boost::asio::io_context& io, Options options, NameResolver& resolver,
                     PolicyFn policy)
    : options_(std::move(options)),
      resolver_(resolver),
      policy_(std::move(policy)),
      strand_(boost::asio::make_strand(io)),
      socket_(strand_) {}

DnsServer::~DnsServer() = default;

Status DnsServer::Bind() {
  const udp::endpoint& ep = options_.bind;
  const std::string where = ep.address().to_string() + ":" + std::to_string(ep.port());
  // Our own socket() call: asio's does not set SOCK_CLOEXEC.
  UniqueFd fd(::socket(ep.protocol().family(), SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return FailErrno("dns: socket for " + where);
  boost::system::error_code ec;
  socket_.assign(ep.protocol(), fd.get(), ec);
  if (ec) return Fail(Error{ec.value(), "dns: adopting socket: " + ec.message()});
  fd.Release();  // owned by socket_
  socket_.bind(ep, ec);
  if (ec) return Fail(Error{ec.value(), "dns: binding " + where + ": " + ec.message()});
  local_ = socket_.local_endpoint(ec);
  if (ec) return Fail(Error{ec.value(), "dns: local address: " + ec.message()});
  return {};
}

void DnsServer::Stop() {
  if (stopped_.exchange(true)) return;
  boost::asio::post(strand_, [self = shared_from_this()] {
    boost::system::error_code ec;
    self->socket_.close(ec);
  });
}

void DnsServer::Receive() {
  socket_.async_receive_from(
      boost::asio::buffer(rx_), sender_,
      boost::asio::bind_executor(
          strand_, [self = shared_from_this()](boost::system::error_code ec, size_t n) {
            if (self->stopped_ || ec == boost::asio::error::operation_aborted ||
                ec == boost::asio::error::bad_descriptor) {
              return;
            }
            if (ec) {
              spdlog::warn("dns: receive: {}", ec.message());
            } else {
              const udp::endpoint to = self->sender_;
              self->HandleDatagram(
                  to.address(), std::span<const uint8_t>(self->rx_.data(), n),
                  [self, to](std::vector<uint8_t> response) {
                    if (self->stopped_ || response.empty()) return;
                    auto buf = std::make_shared<std::vector<uint8_t>>(std::move(response));
                    self->socket_.async_send_to(
                        boost::asio::buffer(*buf), to,
                        boost::asio::bind_executor(
                            self->strand_, [buf, to](boost::system::error_code ec, size_t) {
                              if (ec && ec != boost::asio::error::operation_aborted) {
                                spdlog::debug("dns: reply to {}: {}", to.address().to_string(),
                                              ec.message());
                              }
                            }));
                  });
            }
            self->Receive();
          }));
}

void DnsServer::HandleDatagram(const ip::address& src, std::span<const uint8_t> data,
                               ReplyFn reply) {
  stats_.queries++;
  std::shared_ptr<const AllowList> policy = policy_ ? policy_(src) : nullptr;
  const std::string from = src.to_string();
  if (!policy) {
    stats_.unknown_sender++;
    spdlog::debug("dns {}: unknown sender, dropped", from);
    return;
  }
  const auto drop = [&](std::string_view why) {
    stats_.malformed++;
    spdlog::debug("dns {}: {} ({} bytes), dropped", from, why, data.size());
  };
  // ldns does the parsing; the size check only spares it obvious garbage.
  if (data.size() < kDnsHeaderSize) return drop("short packet");
  ldns_pkt* raw = nullptr;
  const ldns_status st = ldns_wire2pkt(&raw, data.data(), data.size());
  PktPtr pkt(raw);
  if (st != LDNS_STATUS_OK || !pkt) {
    const char* why = ldns_get_errorstr_by_id(st);
    return drop(why ? why : "unparseable");
  }
  // Never answer a response: that is how reflection loops start.
  if (ldns_pkt_qr(pkt.get())) return drop("response packet");

  auto q = std::make_shared<Query>();
  q->id = ldns_pkt_id(pkt.get());
  q->rd = ldns_pkt_rd(pkt.get());

  const auto respond = [&](ldns_pkt_rcode rcode) {
    Respond(stats_, from, *q, rcode, {}, 0, reply);
  };

  if (ldns_pkt_get_opcode(pkt.get()) != LDNS_PACKET_QUERY) {
    stats_.malformed++;
    spdlog::debug("dns {}: opcode {}: NOTIMP", from,
                  static_cast<int>(ldns_pkt_get_opcode(pkt.get())));
    return respond(LDNS_RCODE_NOTIMPL);
  }
  const ldns_rr_list* questions = ldns_pkt_question(pkt.get());
  if (!questions || ldns_rr_list_rr_count(questions) != 1) {
    stats_.malformed++;
    spdlog::debug("dns {}: {} questions: FORMERR", from,
                  questions ? ldns_rr_list_rr_count(questions) : 0);
    return respond(LDNS_RCODE_FORMERR);
  }
  const ldns_rr* question = ldns_rr_list_rr(questions, 0);
  q->question.reset(ldns_rr_clone(question));
  if (!q->question || !ldns_rr_owner(question)) return drop("question without a name");
  q->name = OwnedStr(ldns_rdf2str(ldns_rr_owner(question)));
  q->type = OwnedStr(ldns_rr_type2str(ldns_rr_get_type(question)));
  if (q->name.empty()) return drop("unprintable name");

  if (ldns_rr_get_class(question) != LDNS_RR_CLASS_IN) {
    stats_.malformed++;
    spdlog::debug("dns {}: {} {} class {}: REFUSED", from, q->name, q->type,
                  static_cast<int>(ldns_rr_get_class(question)));
    return respond(LDNS_RCODE_REFUSED);
  }
  // The policy decision, before anything could leave the host.
  if (!policy->AllowsNameAnyPort(q->name)) {
    stats_.denied++;
    spdlog::debug("dns {}: {} {}: denied (not in allowNet): NXDOMAIN", from, q->name, q->type);
    return respond(LDNS_RCODE_NXDOMAIN);
  }
  stats_.answered++;
  if (ldns_rr_get_type(question) != LDNS_RR_TYPE_A) {
    // AAAA included: the sandbox network is IPv4-only.
    spdlog::debug("dns {}: {} {}: allowed, no records of this type", from, q->name, q->type);
    return respond(LDNS_RCODE_NOERROR);
  }

  resolver_.ResolveWithTtl(
      q->name, [self = shared_from_this(), q, policy, from,
                reply = std::move(reply)](Result<NameResolver::Answer> r) mutable {
        boost::asio::post(
            self->strand_, [self, q, policy, from, reply = std::move(reply), r = std::move(r)] {
              if (self->stopped_) return;
              std::vector<ip::address_v4> keep;
              size_t filtered = 0;
              ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
              uint32_t ttl = 0;
              if (!r) {
                rcode = r.error().code == ENOENT ? LDNS_RCODE_NXDOMAIN : LDNS_RCODE_SERVFAIL;
              } else {
                for (const ip::address& a : r->addresses) {
                  if (!a.is_v4()) continue;
                  if (IsForbiddenByDefault(a) && !policy->NamesAddress(a)) {
                    ++filtered;
                    continue;
                  }
                  keep.push_back(a.to_v4());
                }
                if (keep.empty()) rcode = LDNS_RCODE_NXDOMAIN;
                ttl = static_cast<uint32_t>(
                    std::clamp<int64_t>(r->ttl.count(), 0, self->options_.answer_ttl));
              }
              self->stats_.addresses_filtered += filtered;
              spdlog::debug("dns {}: {} {}: allowed, {}: {} address(es), {} withheld{}{}", from,
                            q->name, q->type, RcodeName(rcode), keep.size(), filtered,
                            r ? "" : ", resolver: ", r ? "" : r.error().message);
              Respond(self->stats_, from, *q, rcode, keep, ttl, reply);
            });
      });
}

}  // namespace sandboxd::net
