#include "daemon/ssh/mailbox.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <thread>

namespace sandboxd::ssh {
namespace {

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

TEST(Mailbox, WakesTheConsumerAndKeepsOrder) {
  auto mb = Mailbox::Create();
  ASSERT_TRUE(mb);
  EXPECT_FALSE(Readable((*mb)->fd()));
  ASSERT_TRUE((*mb)->Post({.kind = ToSsh::Kind::kOutput, .chan = 1, .data = "a"}));
  ASSERT_TRUE((*mb)->Post({.kind = ToSsh::Kind::kOutput, .chan = 1, .data = "b"}));
  EXPECT_TRUE(Readable((*mb)->fd()));
  auto msgs = (*mb)->Take();
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].data, "a");
  EXPECT_EQ(msgs[1].data, "b");
  EXPECT_FALSE(Readable((*mb)->fd()));
  EXPECT_TRUE((*mb)->Take().empty());
}

TEST(Mailbox, ClosedMailboxRefusesAndDrops) {
  auto mb = Mailbox::Create();
  ASSERT_TRUE(mb);
  (*mb)->Post({.kind = ToSsh::Kind::kStarted});
  (*mb)->Close();
  EXPECT_TRUE((*mb)->closed());
  EXPECT_FALSE((*mb)->Post({.kind = ToSsh::Kind::kStarted}));
  EXPECT_TRUE((*mb)->Take().empty());
}

TEST(Mailbox, ManyProducersLoseNothing) {
  auto mb = Mailbox::Create();
  ASSERT_TRUE(mb);
  constexpr int kThreads = 4, kEach = 5000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        (*mb)->Post({.kind = ToSsh::Kind::kStdinAck, .chan = uint32_t(t), .n = 1});
    });
  }
  size_t got = 0;
  std::vector<uint64_t> last(kThreads, 0);
  while (got < size_t{kThreads} * kEach) {
    pollfd p{(*mb)->fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1) << "consumer was not woken; got " << got;
    got += (*mb)->Take().size();
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(got, size_t{kThreads} * kEach);
}

}  // namespace
}  // namespace sandboxd::ssh
