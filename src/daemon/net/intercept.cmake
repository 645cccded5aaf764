# TLS interception and the HTTP relay of the egress proxy (secret
# substitution and redaction). Included from src/daemon/net/CMakeLists.txt.
add_library(sbx_net_intercept STATIC
  sandbox_ca.cc
  x509_util.cc
  tls_contexts.cc
  replacer.cc
  http_relay.cc
)
target_include_directories(sbx_net_intercept PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(sbx_net_intercept
  PUBLIC sbx_common sbx_codec Boost::boost OpenSSL::SSL OpenSSL::Crypto spdlog::spdlog Threads::Threads)

add_executable(net_intercept_test
  replacer_test.cc
  sandbox_ca_test.cc
  tls_contexts_test.cc
  http_relay_test.cc
)
target_link_libraries(net_intercept_test PRIVATE sbx_net_intercept GTest::gtest_main)
# The relay tests use loopback ports (port 0) and threads; none should take
# more than a few seconds, so a hang fails instead of stalling ctest.
gtest_discover_tests(net_intercept_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)
