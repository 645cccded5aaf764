# The egress path: the proxy (accept, sniff, splice, hand-off to the HTTP
# relay), the per-sandbox policy, the `fetch` client, and the service that
# ties plumbing, policy, proxy and resolver together for the daemon.
add_library(sbx_net_egress STATIC
  egress_intercept.cc
  egress_policy.cc
  egress_proxy.cc
  network.cc
  sandbox_fetch.cc
  sniff.cc
  splice.cc
)
target_include_directories(sbx_net_egress PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(sbx_net_egress
  PUBLIC sbx_net_plumbing sbx_net_policy sbx_net_intercept sbx_common Boost::boost OpenSSL::SSL OpenSSL::Crypto
  PRIVATE spdlog::spdlog Threads::Threads)

add_executable(net_egress_test
  egress_proxy_test.cc
  sandbox_fetch_test.cc
  sniff_test.cc
)
target_link_libraries(net_egress_test PRIVATE sbx_net_egress spdlog::spdlog GTest::gtest_main)
gtest_discover_tests(net_egress_test DISCOVERY_TIMEOUT 30 PROPERTIES TIMEOUT 120)
