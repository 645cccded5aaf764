#include "daemon/api/fast_path.h"

#include <gtest/gtest.h>

namespace sandboxd::api {
namespace {

TEST(FastPathTest, TakesTheSdksExactShape) {
  auto c = ParseStreamEnqueue(R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":12,"data":"YWJj"}})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->stream_id, 12);
  EXPECT_EQ(c->base64, "YWJj");
  auto empty = ParseStreamEnqueue(R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":0,"data":""}})");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->stream_id, 0);
  EXPECT_EQ(empty->base64, "");
}

TEST(FastPathTest, LeavesEverythingElseToTheParser) {
  for (const char* m : {
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"data":"YWJj","streamId":12}})",
           R"({"jsonrpc":"2.0", "method":"$sandbox.stream.enqueue","params":{"streamId":12,"data":"YWJj"}})",
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":-1,"data":"YWJj"}})",
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":012,"data":"YWJj"}})",
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":1.5,"data":"YWJj"}})",
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":1,"data":"YW\u004aj"}})",
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":1,"data":"a","x":"b"}})",
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":1,"data":"a"}} )",
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":1234567890123456,"data":"a"}})",
           R"({"jsonrpc":"2.0","method":"$sandbox.stream.end","params":{"streamId":1}})",
           R"({"jsonrpc":"2.0","id":1,"method":"$sandbox.stream.enqueue","params":{"streamId":1,"data":"a"}})",
           "ping",
           ""}) {
    EXPECT_FALSE(ParseStreamEnqueue(m)) << m;
  }
}

}  // namespace
}  // namespace sandboxd::api
