# Egress policy and naming: allowNet parsing and matching, address classes,
# the shared name resolver and the sandbox-facing DNS server.
pkg_check_modules(LDNS REQUIRED IMPORTED_TARGET ldns)

add_library(sbx_net_policy STATIC
  allowlist.cc
  addr_class.cc
  name_resolver.cc
  dns_server.cc
)
target_include_directories(sbx_net_policy PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(sbx_net_policy
  PUBLIC sbx_common Boost::boost Threads::Threads
  PRIVATE PkgConfig::LDNS spdlog::spdlog)

add_executable(net_policy_test
  allowlist_test.cc
  addr_class_test.cc
  name_resolver_test.cc
  dns_server_test.cc
)
# The DNS test builds its queries and reads the answers with ldns too.
target_link_libraries(net_policy_test PRIVATE sbx_net_policy PkgConfig::LDNS spdlog::spdlog
                      GTest::gtest_main)
gtest_discover_tests(net_policy_test)
