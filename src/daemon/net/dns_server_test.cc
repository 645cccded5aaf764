#include "daemon/net/dns_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>
// ldns/common.h #defines bool, true and false unless stdbool.h came first.
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers)
//
#include <ldns/ldns.h>

#include <boost/asio/executor_work_guard.hpp>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "common/fd.h"

namespace sandboxd::net {
namespace {

namespace ip = boost::asio::ip;
using namespace std::chrono_literals;
using Bytes = std::vector<uint8_t>;

// ---- building queries and reading responses, with ldns ----

struct PktFree {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using Pkt = std::unique_ptr<ldns_pkt, PktFree>;

Pkt NewQuery(const std::string& name, ldns_rr_type type, uint16_t id,
             ldns_rr_class cls = LDNS_RR_CLASS_IN) {
  ldns_rdf* dname = ldns_dname_new_frm_str(name.c_str());
  EXPECT_NE(dname, nullptr) << name;
  Pkt q(ldns_pkt_query_new(dname, type, cls, LDNS_RD));
  ldns_pkt_set_id(q.get(), id);
  return q;
}

Bytes Wire(const ldns_pkt* p) {
  uint8_t* wire = nullptr;
  size_t n = 0;
  EXPECT_EQ(ldns_pkt2wire(&wire, p, &n), LDNS_STATUS_OK);
  Bytes out(wire, wire + n);
  std::free(wire);
  return out;
}

Bytes Query(const std::string& name, ldns_rr_type type, uint16_t id = 0x1234) {
  return Wire(NewQuery(name, type, id).get());
}

Pkt Parse(const Bytes& wire) {
  ldns_pkt* p = nullptr;
  EXPECT_EQ(ldns_wire2pkt(&p, wire.data(), wire.size()), LDNS_STATUS_OK);
  return Pkt(p);
}

std::vector<ip::address_v4> AnswersA(const ldns_pkt* p) {
  std::vector<ip::address_v4> out;
  const ldns_rr_list* answers = ldns_pkt_answer(p);
  for (size_t i = 0; answers && i < ldns_rr_list_rr_count(answers); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answers, i);
    EXPECT_EQ(ldns_rr_get_type(rr), LDNS_RR_TYPE_A);
    const ldns_rdf* rd = ldns_rr_rdf(rr, 0);
    EXPECT_EQ(ldns_rdf_size(rd), 4u);
    ip::address_v4::bytes_type b;
    std::copy_n(ldns_rdf_data(rd), 4, b.begin());
    out.emplace_back(b);
  }
  return out;
}

std::string OwnerOf(const ldns_rr* rr) {
  char* s = ldns_rdf2str(ldns_rr_owner(rr));
  std::string out(s ? s : "");
  std::free(s);
  return out;
}

std::vector<ip::address_v4> V4s(std::initializer_list<const char*> l) {
  std::vector<ip::address_v4> out;
  for (const char* s : l) out.push_back(ip::make_address_v4(s));
  return out;
}

// ---- fixture: a resolver from a hosts file only, and a server on 127.0.0.1 ----

constexpr char kHosts[] =
    "192.0.2.10 api.test\n"
    "192.0.2.11 api.test\n"
    "2001:db8::10 api.test\n"
    "10.0.0.5 internal.test\n"
    "192.0.2.20 internal.test\n"
    "10.1.1.1 onlyprivate.test\n"
    "169.254.169.254 meta.test\n"
    "::ffff:127.0.0.1 mapped.test\n"
    "10.9.9.9 named-private.test\n"
    "2001:db8::1 v6only.test\n"
    "192.0.2.30 deep.wild.test\n"
    "192.0.2.99 evil.example\n";

class DnsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbx-dns-hosts-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ::close(fd);
    hosts_path_ = tmpl;
    std::ofstream out(hosts_path_);
    out << kHosts;
    for (int i = 0; i < 40; ++i) out << "198.51.100." << i + 1 << " many.test\n";
    out.close();

    auto r =
        NameResolver::Create(io_.get_executor(), {.hosts_file = hosts_path_, .hosts_only = true});
    ASSERT_TRUE(r.has_value()) << r.error().message;
    resolver_ = std::move(*r);

    auto list =
        AllowList::Parse({"api.test:443", "*.wild.test", "internal.test", "onlyprivate.test",
                          "meta.test", "mapped.test", "named-private.test:80", "10.9.9.9",
                          "v6only.test", "many.test", "missing.test"});
    ASSERT_TRUE(list.has_value()) << list.error().message;
    allow_ = std::make_shared<const AllowList>(std::move(*list));

    auto s = DnsServer::Start(io_, {.bind = {ip::make_address("127.0.0.1"), 0}}, *resolver_,
                              [this](const ip::address& src) -> std::shared_ptr<const AllowList> {
                                if (src == ip::make_address("127.0.0.1")) return allow_;
                                return nullptr;
                              });
    ASSERT_TRUE(s.has_value()) << s.error().message;
    server_ = std::move(*s);
    spdlog::set_level(spdlog::level::debug);  // exercise the decision logs
  }

  void TearDown() override {
    spdlog::set_level(spdlog::level::info);
    if (server_) server_->Stop();
    io_.stop();
    if (io_thread_.joinable()) io_thread_.join();
    ::unlink(hosts_path_.c_str());
  }

  void RunIoInBackground() {
    io_thread_ = std::thread([this] { io_.run(); });
  }

  // Sends `query` from 127.0.0.1 to the server over real UDP; the response or
  // nullopt after `timeout`.
  std::optional<Bytes> Exchange(const Bytes& query, std::chrono::milliseconds timeout = 5s) {
    UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    EXPECT_TRUE(fd.valid());
    timeval tv{.tv_sec = timeout.count() / 1000, .tv_usec = (timeout.count() % 1000) * 1000};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(server_->port());
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::sendto(fd.get(), query.data(), query.size(), 0,
                       reinterpret_cast<const sockaddr*>(&to), sizeof to),
              static_cast<ssize_t>(query.size()));
    Bytes buf(65536);
    const ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<size_t>(n));
    return buf;
  }

  // Feeds one datagram to the handler directly (no socket) and runs the
  // io_context until it replied or `wait` passed. Call without
  // RunIoInBackground().
  std::optional<Bytes> Handle(const Bytes& query, const std::string& src = "127.0.0.1",
                              std::chrono::milliseconds wait = 2s) {
    std::optional<Bytes> reply;
    server_->HandleDatagram(ip::make_address(src), query, [&](Bytes r) { reply = std::move(r); });
    const auto deadline = std::chrono::steady_clock::now() + wait;
    io_.restart();
    while (!reply && std::chrono::steady_clock::now() < deadline) io_.run_one_for(20ms);
    return reply;
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      io_.get_executor()};
  std::string hosts_path_;
  std::unique_ptr<NameResolver> resolver_;
  std::shared_ptr<const AllowList> allow_;
  std::shared_ptr<DnsServer> server_;
  std::thread io_thread_;
};

// ---- over real UDP ----

TEST_F(DnsServerTest, AnswersAFromTheHostsFileOverUdp) {
  RunIoInBackground();
  ASSERT_NE(server_->port(), 0);
  auto raw = Exchange(Query("api.test.", LDNS_RR_TYPE_A, 0xbeef));
  ASSERT_TRUE(raw.has_value()) << "no response";
  EXPECT_LE(raw->size(), 512u);
  Pkt r = Parse(*raw);
  ASSERT_TRUE(r);
  EXPECT_EQ(ldns_pkt_id(r.get()), 0xbeef);
  EXPECT_TRUE(ldns_pkt_qr(r.get()));
  EXPECT_TRUE(ldns_pkt_ra(r.get()));
  EXPECT_TRUE(ldns_pkt_rd(r.get()));
  EXPECT_FALSE(ldns_pkt_tc(r.get()));
  EXPECT_FALSE(ldns_pkt_aa(r.get()));
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_NOERROR);
  ASSERT_EQ(ldns_pkt_qdcount(r.get()), 1);
  const ldns_rr* q = ldns_rr_list_rr(ldns_pkt_question(r.get()), 0);
  EXPECT_EQ(OwnerOf(q), "api.test.");
  EXPECT_EQ(ldns_rr_get_type(q), LDNS_RR_TYPE_A);
  EXPECT_EQ(AnswersA(r.get()), V4s({"192.0.2.10", "192.0.2.11"}));
  for (size_t i = 0; i < ldns_pkt_ancount(r.get()); ++i) {
    EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(r.get()), i)), 30u);
  }
  EXPECT_EQ(server_->stats().answered, 1u);
}

TEST_F(DnsServerTest, DeniedNamesGetNxdomainWithoutAnyLookupOverUdp) {
  RunIoInBackground();
  // evil.example is even in the hosts file: the policy, not the resolver,
  // decides, and the resolver is never asked.
  for (auto [name, type] : std::vector<std::pair<std::string, ldns_rr_type>>{
           {"evil.example.", LDNS_RR_TYPE_A},
           {"c2VjcmV0.exfil.evil.example.", LDNS_RR_TYPE_TXT},
           {"evil.example.", LDNS_RR_TYPE_AAAA},
           {"wild.test.", LDNS_RR_TYPE_A},  // the wildcard's apex is not allowed
           {"api.test.evil.example.", LDNS_RR_TYPE_A},
           {"localhost.", LDNS_RR_TYPE_A},
       }) {
    SCOPED_TRACE(name);
    auto raw = Exchange(Query(name, type));
    ASSERT_TRUE(raw.has_value());
    Pkt r = Parse(*raw);
    EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_NXDOMAIN);
    EXPECT_EQ(ldns_pkt_ancount(r.get()), 0);
    EXPECT_EQ(ldns_pkt_qdcount(r.get()), 1);
  }
  EXPECT_EQ(resolver_->stats().resolves, 0u);
  EXPECT_EQ(server_->stats().denied, 6u);
}

TEST_F(DnsServerTest, UnknownSenderIsDroppedOverUdp) {
  // A second server whose policy knows nobody: queries go unanswered.
  auto s = DnsServer::Start(io_, {.bind = {ip::make_address("127.0.0.1"), 0}}, *resolver_,
                            [](const ip::address&) { return nullptr; });
  ASSERT_TRUE(s.has_value());
  std::swap(server_, *s);
  RunIoInBackground();
  EXPECT_FALSE(Exchange(Query("api.test.", LDNS_RR_TYPE_A), 300ms).has_value());
  EXPECT_EQ(server_->stats().unknown_sender, 1u);
  EXPECT_EQ(resolver_->stats().resolves, 0u);
  (*s)->Stop();
}

// ---- the handler directly ----

TEST_F(DnsServerTest, AaaaIsEmptyNoError) {
  auto raw = Handle(Query("api.test", LDNS_RR_TYPE_AAAA));
  ASSERT_TRUE(raw.has_value());
  Pkt r = Parse(*raw);
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_NOERROR);
  EXPECT_EQ(ldns_pkt_ancount(r.get()), 0);
  EXPECT_EQ(ldns_pkt_qdcount(r.get()), 1);
  EXPECT_EQ(resolver_->stats().resolves, 0u);  // no lookup needed to say "none"
}

TEST_F(DnsServerTest, OtherTypesAreEmptyNoError) {
  for (ldns_rr_type t : {LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_MX, LDNS_RR_TYPE_ANY, LDNS_RR_TYPE_CNAME,
                         static_cast<ldns_rr_type>(65280)}) {
    auto raw = Handle(Query("api.test", t));
    ASSERT_TRUE(raw.has_value());
    Pkt r = Parse(*raw);
    EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_NOERROR) << t;
    EXPECT_EQ(ldns_pkt_ancount(r.get()), 0) << t;
  }
  EXPECT_EQ(resolver_->stats().resolves, 0u);
}

TEST_F(DnsServerTest, ForbiddenAddressesAreWithheldUnlessNamed) {
  struct Case {
    std::string name;
    ldns_pkt_rcode rcode;
    std::vector<ip::address_v4> want;
  };
  const std::vector<Case> cases = {
      {"internal.test", LDNS_RCODE_NOERROR, V4s({"192.0.2.20"})},  // 10.0.0.5 withheld
      {"onlyprivate.test", LDNS_RCODE_NXDOMAIN, {}},
      {"meta.test", LDNS_RCODE_NXDOMAIN, {}},
      {"mapped.test", LDNS_RCODE_NXDOMAIN, {}},  // ::ffff:127.0.0.1 is not IPv4 anyway
      {"named-private.test", LDNS_RCODE_NOERROR, V4s({"10.9.9.9"})},  // allowNet names 10.9.9.9
      {"v6only.test", LDNS_RCODE_NXDOMAIN, {}},
      {"missing.test", LDNS_RCODE_NXDOMAIN, {}},  // allowed, but does not exist
      {"deep.wild.test", LDNS_RCODE_NOERROR, V4s({"192.0.2.30"})},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto raw = Handle(Query(c.name, LDNS_RR_TYPE_A));
    ASSERT_TRUE(raw.has_value());
    Pkt r = Parse(*raw);
    EXPECT_EQ(ldns_pkt_get_rcode(r.get()), c.rcode);
    EXPECT_EQ(AnswersA(r.get()), c.want);
  }
  EXPECT_EQ(server_->stats().addresses_filtered, 3u);  // 10.0.0.5, 10.1.1.1, 169.254.169.254
  EXPECT_EQ(server_->stats().denied, 0u);
}

TEST_F(DnsServerTest, PreservesQuestionCaseAndId) {
  auto raw = Handle(Query("ApI.TeSt.", LDNS_RR_TYPE_A, 7));
  ASSERT_TRUE(raw.has_value());
  Pkt r = Parse(*raw);
  EXPECT_EQ(ldns_pkt_id(r.get()), 7);
  EXPECT_EQ(OwnerOf(ldns_rr_list_rr(ldns_pkt_question(r.get()), 0)), "ApI.TeSt.");
  ASSERT_EQ(ldns_pkt_ancount(r.get()), 2);
  EXPECT_EQ(OwnerOf(ldns_rr_list_rr(ldns_pkt_answer(r.get()), 0)), "ApI.TeSt.");
}

TEST_F(DnsServerTest, LargeAnswersAreTruncatedTo512BytesWithTc) {
  // An EDNS query offering 4096 bytes still gets at most 512, and no OPT.
  Pkt q = NewQuery("many.test", LDNS_RR_TYPE_A, 9);
  ldns_pkt_set_edns_udp_size(q.get(), 4096);
  auto raw = Handle(Wire(q.get()));
  ASSERT_TRUE(raw.has_value());
  EXPECT_LE(raw->size(), 512u);
  Pkt r = Parse(*raw);
  EXPECT_TRUE(ldns_pkt_tc(r.get()));
  EXPECT_FALSE(ldns_pkt_edns(r.get()));
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_NOERROR);
  EXPECT_GT(ldns_pkt_ancount(r.get()), 20);
  EXPECT_LT(ldns_pkt_ancount(r.get()), 40);
  EXPECT_EQ(server_->stats().truncated, 1u);
}

TEST_F(DnsServerTest, FormerrForQuestionCountOtherThanOne) {
  Pkt none(ldns_pkt_new());
  ldns_pkt_set_id(none.get(), 11);
  auto raw = Handle(Wire(none.get()));
  ASSERT_TRUE(raw.has_value());
  Pkt r = Parse(*raw);
  EXPECT_EQ(ldns_pkt_id(r.get()), 11);
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_FORMERR);

  Pkt two = NewQuery("api.test", LDNS_RR_TYPE_A, 12);
  ldns_rr* extra = ldns_rr_new();
  ldns_rr_set_owner(extra, ldns_dname_new_frm_str("internal.test"));
  ldns_rr_set_type(extra, LDNS_RR_TYPE_A);
  ldns_rr_set_class(extra, LDNS_RR_CLASS_IN);
  ldns_rr_set_question(extra, true);
  ASSERT_TRUE(ldns_pkt_push_rr(two.get(), LDNS_SECTION_QUESTION, extra));
  raw = Handle(Wire(two.get()));
  ASSERT_TRUE(raw.has_value());
  r = Parse(*raw);
  EXPECT_EQ(ldns_pkt_id(r.get()), 12);
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_FORMERR);
  EXPECT_EQ(ldns_pkt_ancount(r.get()), 0);
  EXPECT_EQ(resolver_->stats().resolves, 0u);
  EXPECT_EQ(server_->stats().malformed, 2u);
}

TEST_F(DnsServerTest, RefusedForOtherClasses) {
  auto raw = Handle(Wire(NewQuery("api.test", LDNS_RR_TYPE_A, 13, LDNS_RR_CLASS_CH).get()));
  ASSERT_TRUE(raw.has_value());
  Pkt r = Parse(*raw);
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_REFUSED);
  EXPECT_EQ(ldns_pkt_qdcount(r.get()), 1);
  EXPECT_EQ(resolver_->stats().resolves, 0u);
}

TEST_F(DnsServerTest, NotImpForOtherOpcodes) {
  Pkt q = NewQuery("api.test", LDNS_RR_TYPE_A, 14);
  ldns_pkt_set_opcode(q.get(), LDNS_PACKET_UPDATE);
  auto raw = Handle(Wire(q.get()));
  ASSERT_TRUE(raw.has_value());
  Pkt r = Parse(*raw);
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), LDNS_RCODE_NOTIMPL);
  EXPECT_EQ(resolver_->stats().resolves, 0u);
}

TEST_F(DnsServerTest, ResponsesAndGarbageAreDropped) {
  Pkt resp = NewQuery("api.test", LDNS_RR_TYPE_A, 15);
  ldns_pkt_set_qr(resp.get(), true);
  EXPECT_FALSE(Handle(Wire(resp.get()), "127.0.0.1", 0ms).has_value());
  EXPECT_FALSE(Handle(Bytes{}, "127.0.0.1", 0ms).has_value());
  EXPECT_FALSE(Handle(Bytes(11, 0), "127.0.0.1", 0ms).has_value());
  Bytes cut = Query("api.test", LDNS_RR_TYPE_A);
  cut.resize(cut.size() - 3);
  EXPECT_FALSE(Handle(cut, "127.0.0.1", 0ms).has_value());
  EXPECT_EQ(server_->stats().malformed, 4u);
  EXPECT_EQ(resolver_->stats().resolves, 0u);
}

TEST_F(DnsServerTest, UnknownSenderIsDroppedBeforeParsing) {
  EXPECT_FALSE(Handle(Query("api.test", LDNS_RR_TYPE_A), "10.0.0.1", 0ms).has_value());
  EXPECT_FALSE(Handle(Bytes{1, 2, 3}, "10.0.0.1", 0ms).has_value());
  EXPECT_EQ(server_->stats().unknown_sender, 2u);
  EXPECT_EQ(server_->stats().malformed, 0u);
  EXPECT_EQ(resolver_->stats().resolves, 0u);
}

TEST_F(DnsServerTest, ResolverFailureIsServfail) {
  auto failing = NameResolver::Create(
      io_.get_executor(), {.lookup = [](const std::string& n) -> Result<NameResolver::Addresses> {
        return Fail(Error{EAGAIN, n + ": try again"});
      }});
  ASSERT_TRUE(failing.has_value());
  auto s = DnsServer::Start(io_, {.bind = {ip::make_address("127.0.0.1"), 0}}, **failing,
                            [this](const ip::address&) { return allow_; });
  ASSERT_TRUE(s.has_value());
  std::swap(server_, *s);
  auto raw = Handle(Query("api.test", LDNS_RR_TYPE_A));
  ASSERT_TRUE(raw.has_value());
  EXPECT_EQ(ldns_pkt_get_rcode(Parse(*raw).get()), LDNS_RCODE_SERVFAIL);
  server_->Stop();
  std::swap(server_, *s);
  (*s)->Stop();
  io_.poll();
}

TEST_F(DnsServerTest, AnswerTtlNeverExceedsThePinnedLifetime) {
  // The resolver keeps answers 10 s: the sandbox must not cache them longer.
  auto short_lived = NameResolver::Create(
      io_.get_executor(), {.positive_ttl = 10s, .hosts_file = hosts_path_, .hosts_only = true});
  ASSERT_TRUE(short_lived.has_value());
  auto s = DnsServer::Start(io_, {.bind = {ip::make_address("127.0.0.1"), 0}}, **short_lived,
                            [this](const ip::address&) { return allow_; });
  ASSERT_TRUE(s.has_value());
  std::swap(server_, *s);
  auto raw = Handle(Query("api.test", LDNS_RR_TYPE_A));
  ASSERT_TRUE(raw.has_value());
  Pkt r = Parse(*raw);
  ASSERT_GT(ldns_pkt_ancount(r.get()), 0);
  EXPECT_EQ(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(r.get()), 0)), 10u);
  server_->Stop();
  std::swap(server_, *s);
  (*s)->Stop();
  io_.poll();
}

TEST_F(DnsServerTest, StopSuppressesRepliesOfLookupsInFlight) {
  std::optional<Bytes> reply;
  server_->HandleDatagram(ip::make_address("127.0.0.1"), Query("api.test", LDNS_RR_TYPE_A),
                          [&](Bytes r) { reply = std::move(r); });
  server_->Stop();
  io_.poll();
  io_.run_one_for(50ms);
  EXPECT_FALSE(reply.has_value());
}

// ---- hostile input ----

TEST_F(DnsServerTest, SurvivesRandomAndMangledPackets) {
  // Logs at debug level into a null sink, so that the logging paths run too.
  auto previous = spdlog::default_logger();
  auto null_logger =
      std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
  null_logger->set_level(spdlog::level::debug);
  spdlog::set_default_logger(null_logger);

  // Deeper runs by hand: SBX_FUZZ_ITERATIONS=2000000 SBX_FUZZ_SEED=7 (under ASan).
  const auto env = [](const char* name, unsigned long dflt) {
    const char* v = std::getenv(name);
    return v ? std::strtoul(v, nullptr, 10) : dflt;
  };
  const unsigned long iterations = env("SBX_FUZZ_ITERATIONS", 30000);
  std::mt19937 rng(static_cast<uint32_t>(env("SBX_FUZZ_SEED", 20240601)));
  const std::vector<Bytes> seeds = {
      Query("api.test", LDNS_RR_TYPE_A),
      Query("many.test", LDNS_RR_TYPE_A),
      Query("x.wild.test", LDNS_RR_TYPE_AAAA),
      Query("evil.example", LDNS_RR_TYPE_TXT),
      Wire(NewQuery("api.test", LDNS_RR_TYPE_A, 1, LDNS_RR_CLASS_CH).get()),
  };
  size_t replies = 0;
  const auto feed = [&](const Bytes& pkt) {
    // The reply may come later (after a lookup): capture by value.
    const std::optional<std::pair<uint8_t, uint8_t>> id =
        pkt.size() >= 2 ? std::optional(std::pair(pkt[0], pkt[1])) : std::nullopt;
    server_->HandleDatagram(ip::make_address("127.0.0.1"), pkt, [&replies, id](Bytes r) {
      ++replies;
      EXPECT_LE(r.size(), 512u);
      ASSERT_GE(r.size(), 12u);
      ASSERT_TRUE(id.has_value());  // nothing shorter than a header is answered
      EXPECT_EQ(r[0], id->first);   // id mirrored
      EXPECT_EQ(r[1], id->second);
    });
  };
  for (unsigned long i = 0; i < iterations; ++i) {
    Bytes pkt;
    switch (i % 4) {
      case 0: {  // pure noise, any length
        pkt.resize(rng() % 600);
        for (auto& b : pkt) b = static_cast<uint8_t>(rng());
        break;
      }
      case 1: {  // a valid query cut short
        pkt = seeds[rng() % seeds.size()];
        pkt.resize(rng() % (pkt.size() + 1));
        break;
      }
      case 2: {  // a valid query with a few flipped bytes
        pkt = seeds[rng() % seeds.size()];
        for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k) {
          pkt[rng() % pkt.size()] = static_cast<uint8_t>(rng());
        }
        break;
      }
      case 3: {  // a valid header claiming many records, then noise
        pkt = seeds[rng() % seeds.size()];
        for (int k = 4; k < 12; ++k) pkt[k] = static_cast<uint8_t>(rng());
        for (int k = 0, n = static_cast<int>(rng() % 64); k < n; ++k) {
          pkt.push_back(static_cast<uint8_t>(rng()));
        }
        // Compression pointers looping back into the header.
        if (pkt.size() > 14 && rng() % 2) {
          pkt[12] = 0xc0;
          pkt[13] = static_cast<uint8_t>(rng() % 16);
        }
        break;
      }
    }
    feed(pkt);
    if (i % 64 == 0) io_.poll();
  }
  io_.restart();
  io_.poll();
  spdlog::set_default_logger(previous);
  EXPECT_EQ(server_->stats().queries, iterations);
  EXPECT_GT(replies, 0u);
  // Something of everything was exercised.
  EXPECT_GT(server_->stats().malformed, 0u);
  EXPECT_GT(server_->stats().answered, 0u);
}

}  // namespace
}  // namespace sandboxd::net
