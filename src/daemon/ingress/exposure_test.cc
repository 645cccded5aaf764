#include "daemon/ingress/exposure.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "daemon/ingress/expose_api.h"

namespace sandboxd::ingress {
namespace {

constexpr const char* kId = "sbx_loc_0123456789abcdefghjk";

TEST(IngressNames, FormatsAndParses) {
  Naming n{"localhost", 8443, true};
  EXPECT_EQ(HostFor(n, kId, "8000"), "sbx-loc-0123456789abcdefghjk-8000.localhost:8443");
  n.public_port = 443;
  EXPECT_EQ(HostFor(n, kId, "8000"), "sbx-loc-0123456789abcdefghjk-8000.localhost");

  auto r = ParseIngressHost("SBX-LOC-0123456789ABCDEFGHJK-8000.LocalHost.:8443", "localhost");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->sandbox_id, kId);
  EXPECT_EQ(r->suffix, "8000");
  r = ParseIngressHost("sbx-loc-0123456789abcdefghjk-h0123456789.sbx.example.com",
                       "sbx.example.com");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->suffix, "h0123456789");
}

TEST(IngressNames, RefusesWhatIsNotOurs) {
  const char* bad[] = {
      "localhost",
      "sbx-loc-0123456789abcdefghjk-8000.example.com",       // other domain
      "x.sbx-loc-0123456789abcdefghjk-8000.localhost",       // deeper
      "sbx-loc-0123456789abcdefghjk-8000localhost",          // no dot
      "sbx-loc-0123456789abcdefghjk-0.localhost",            // port 0
      "sbx-loc-0123456789abcdefghjk-65536.localhost",        // port range
      "sbx-loc-0123456789abcdefghjk-08000.localhost",        // leading zero
      "sbx-loc-0123456789abcdefghj-8000.localhost",          // short id
      "sbx-loc-0123456789abcdefghji-8000.localhost",         // 'i' is not Crockford
      "sbx-lo1-0123456789abcdefghjk-8000.localhost",         // region
      "sbx-loc-0123456789abcdefghjk-h012345678.localhost",   // short token
      "sbx-loc-0123456789abcdefghjk-x0123456789.localhost",  // token letter
      "sbx-loc-0123456789abcdefghjk-.localhost",
      "",
  };
  for (const char* h : bad) EXPECT_FALSE(ParseIngressHost(h, "localhost")) << h;
}

TEST(ExposureSet, PortsTokensAndPids) {
  ExposureSet s;
  EXPECT_FALSE(s.Find("8000"));
  ASSERT_EQ(*s.ExposePort(8000), "8000");
  EXPECT_EQ(s.Find("8000"), (ExposeTarget{8000, 0}));
  EXPECT_FALSE(s.Find("8001"));

  auto t = s.Reserve();
  ASSERT_TRUE(t);
  EXPECT_EQ(t->size(), 11u);
  EXPECT_FALSE(s.Find(*t)) << "reserved, not bound yet";
  ASSERT_TRUE(s.Bind(*t, ExposeTarget{9000, 0}));
  EXPECT_EQ(s.Find(*t), (ExposeTarget{9000, 0}));
  EXPECT_EQ(s.Find("9000"), (ExposeTarget{9000, 0})) << "a port exposed through a token is exposed";

  auto p = s.Reserve();
  ASSERT_TRUE(s.Bind(*p, ExposeTarget{0, 42}));
  EXPECT_EQ(s.Find(*p), (ExposeTarget{0, 42}));

  EXPECT_FALSE(s.Bind("h0000000000", ExposeTarget{1, 0})) << "never handed out";
  EXPECT_FALSE(s.Bind("8000", ExposeTarget{8001, 0})) << "port name for another port";
  EXPECT_TRUE(s.Bind("7000", ExposeTarget{7000, 0}));
  EXPECT_FALSE(s.Bind(*t, ExposeTarget{1, 1}));
}

TEST(ExposureSet, Bounded) {
  ExposureSet s;
  for (size_t i = 0; i < ExposureSet::kMaxNames; ++i) ASSERT_TRUE(s.Reserve());
  EXPECT_FALSE(s.Reserve());
  EXPECT_FALSE(s.ExposePort(80));
}

TEST(ExposureSet, AGuestIsReachedAtItsAddressNeverThroughTheHostsProc) {
  ExposureSet s;
  s.SetGuest(0x0a590002);
  auto h = s.Handles(::getpid());  // QEMU's pid in the daemon: its /proc is the host's
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ((*h)->guest_ip, 0x0a590002u);
  EXPECT_FALSE((*h)->proc) << "a {pid} would name a host process";
  EXPECT_FALSE((*h)->netns);

  // A guest's pid is its kernel's: taken on trust here, resolved by its agent
  // per request (ExposeHttpRest/Rpc do not look in the host's /proc).
  Naming n{"localhost", 4443, true};
  EXPECT_TRUE(ExposeHttpRest(s, kId, ::getpid(), n, R"({"pid": 999999})"));

  ExposureSet offline;
  offline.SetGuest(0);  // a microVM without a network
  EXPECT_FALSE(offline.Handles(::getpid()));
  auto r = ExposeHttpRest(offline, kId, ::getpid(), n, R"({"port": 3000})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 501);
  EXPECT_EQ(r.error().code, "INGRESS_UNSUPPORTED");
}

TEST(ExposeApi, RestAndRpc) {
  ExposureSet s;
  Naming n{"localhost", 4443, true};
  EXPECT_EQ(ExposeHttpRest(s, kId, 0, std::nullopt, "{}").error().code, "INGRESS_DISABLED");
  Naming vm = n;
  vm.unsupported = "not with microvm";
  EXPECT_EQ(ExposeHttpRest(s, kId, 0, vm, "{}").error().status, 501);
  EXPECT_EQ(ExposeHttpRest(s, kId, 0, n, "[1]").error().status, 400);
  EXPECT_EQ(ExposeHttpRest(s, kId, 0, n, R"({"port": 0})").error().status, 400);
  EXPECT_EQ(ExposeHttpRest(s, kId, 0, n, R"({"port": 1, "pid": 2})").error().status, 400);

  auto r = ExposeHttpRest(s, kId, 0, n, R"({"port": 3000})");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["domain"], "sbx-loc-0123456789abcdefghjk-3000.localhost:4443");
  EXPECT_EQ((*r)["url"], "https://sbx-loc-0123456789abcdefghjk-3000.localhost:4443");
  EXPECT_TRUE(s.Find("3000"));

  // npm SDK: {} reserves, the RPC binds.
  r = ExposeHttpRest(s, kId, 0, n, "{}");
  ASSERT_TRUE(r);
  std::string domain = (*r)["domain"];
  auto route = ParseExposedName(domain);
  ASSERT_TRUE(route);
  EXPECT_FALSE(s.Find(route->suffix));
  EXPECT_TRUE(ExposeHttpRpc(s, kId, 0, {{"domain", domain}, {"port", 8080}}));
  EXPECT_EQ(s.Find(route->suffix), (ExposeTarget{8080, 0}));

  auto e = ExposeHttpRpc(s, kId, 0, {{"domain", 7}, {"port", 8080}});
  ASSERT_FALSE(e);
  EXPECT_TRUE(e.error().invalid_params);
  e = ExposeHttpRpc(s, kId, 0, {{"domain", domain}});
  ASSERT_FALSE(e);
  EXPECT_TRUE(e.error().invalid_params);
  e = ExposeHttpRpc(s, "sbx_loc_zzzzzzzzzzzzzzzzzzzz", 0, {{"domain", domain}, {"port", 1}});
  ASSERT_FALSE(e) << "another sandbox's name";
  EXPECT_FALSE(e.error().invalid_params);
  e = ExposeHttpRpc(
      s, kId, 0, {{"domain", "sbx-loc-0123456789abcdefghjk-h0000000000.localhost"}, {"port", 1}});
  ASSERT_FALSE(e) << "a name never handed out";
}

TEST(ExposeApi, PidOfOwnProcess) {
  // As if this process were a sandbox's init: /proc/<self>/root/proc is /proc.
  ExposureSet s;
  Naming n;
  pid_t me = ::getpid();
  auto r = ExposeHttpRest(s, kId, me, n, "{\"pid\": " + std::to_string(me) + "}");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(ExposeHttpRest(s, kId, me, n, R"({"pid": 4194304})").error().code, "PROCESS_NOT_FOUND");
}

}  // namespace
}  // namespace sandboxd::ingress
