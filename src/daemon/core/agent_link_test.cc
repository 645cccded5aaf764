// The daemon's end of the agent link against a scripted (possibly hostile)
// agent on the other end of a socketpair.
#include "daemon/core/agent_link.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "common/frame.h"

namespace sandboxd::core {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class AgentLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    peer_.Reset(sv[1]);
    link_ = std::make_shared<AgentLink>(io_, UniqueFd(sv[0]), 300ms);
    link_->Start([this](const json& ev) { events_.push_back(ev); },
                 [this](const Error& e) { closed_ = e.message; });
  }
  // Writes raw bytes as the agent.
  // Interleaves with the event loop: large writes would fill the socket buffer.
  void AgentSend(const std::string& bytes) {
    size_t off = 0;
    for (int spins = 0; off < bytes.size() && spins < 10000; ++spins) {
      ssize_t n = ::send(peer_.get(), bytes.data() + off, bytes.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) off += static_cast<size_t>(n);
      else if (n < 0 && errno != EAGAIN) break;
      if (off < bytes.size()) {
        io_.restart();
        io_.run_for(5ms);
      }
    }
    ASSERT_EQ(off, bytes.size());
  }
  void AgentControl(const json& j) {
    std::string w;
    link::AppendFrame(w, link::FrameType::kControl, 0, j.dump());
    AgentSend(w);
  }
  // Reads what the daemon sent, as frames.
  std::vector<link::Frame> AgentReceive() {
    std::vector<link::Frame> out;
    char buf[65536];
    for (int idle = 0; idle < 3;) {
      ssize_t n = ::recv(peer_.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) {  // let the daemon side flush what the socket buffer held back
        ++idle;
        io_.restart();
        io_.run_for(10ms);
        continue;
      }
      idle = 0;
      std::span<const char> data(buf, static_cast<size_t>(n));
      while (!data.empty()) {
        auto used = decoder_.Feed(data);
        EXPECT_TRUE(used);
        if (!used) return out;
        data = data.subspan(*used);
        while (auto f = decoder_.Next()) out.push_back(std::move(*f));
      }
    }
    return out;
  }
  void Pump(std::chrono::milliseconds d = 50ms) {
    io_.restart();
    io_.run_for(d);
  }

  boost::asio::io_context io_;
  UniqueFd peer_;
  std::shared_ptr<AgentLink> link_;
  std::vector<json> events_;
  std::optional<std::string> closed_;
  link::FrameDecoder decoder_;
};

TEST_F(AgentLinkTest, CallGetsItsReplyAndEventsArrive) {
  std::optional<Result<json>> got;
  link_->Call("ping", json::object(), [&](Result<json> r) { got = std::move(r); });
  Pump();
  auto frames = AgentReceive();
  ASSERT_EQ(frames.size(), 1u);
  auto req = json::parse(frames[0].payload);
  EXPECT_EQ(req["op"], "ping");
  AgentControl({{"event", "exit"}, {"pid", 5}, {"code", 0}, {"signal", 0}});
  AgentControl({{"id", req["id"]}, {"ok", json::object()}});
  Pump();
  ASSERT_TRUE(got && got->has_value());
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0]["pid"], 5);
  EXPECT_FALSE(closed_);
}

TEST_F(AgentLinkTest, ErrorsCarryTheAgentsErrno) {
  std::optional<Result<json>> got;
  link_->Call("spawn", json::object(), [&](Result<json> r) { got = std::move(r); });
  Pump();
  auto req = json::parse(AgentReceive().at(0).payload);
  AgentControl({{"id", req["id"]}, {"err", {{"errno", ENOENT}, {"message", "spawn 'x': nope"}}}});
  Pump();
  ASSERT_TRUE(got && !got->has_value());
  EXPECT_EQ(got->error().code, ENOENT);
}

TEST_F(AgentLinkTest, UnansweredCallsTimeOut) {
  std::optional<Result<json>> got;
  link_->Call("ping", json::object(), [&](Result<json> r) { got = std::move(r); });
  for (int i = 0; i < 40 && !got; ++i) Pump(50ms);
  ASSERT_TRUE(got && !got->has_value());
  EXPECT_EQ(got->error().code, ETIMEDOUT);
}

TEST_F(AgentLinkTest, OversizedFrameClosesTheLinkAndFailsPendingCalls) {
  std::optional<Result<json>> got;
  link_->Call("ping", json::object(), [&](Result<json> r) { got = std::move(r); });
  std::string w;
  link::AppendFrame(w, link::FrameType::kControl, 0, "{}");
  w[3] = '\x7f';  // declares ~2 GiB
  AgentSend(w);
  Pump();
  ASSERT_TRUE(closed_);
  ASSERT_TRUE(got && !got->has_value());
  EXPECT_EQ(got->error().code, EPIPE);
  EXPECT_TRUE(link_->closed());
}

TEST_F(AgentLinkTest, GarbageControlClosesTheLink) {
  std::string w;
  link::AppendFrame(w, link::FrameType::kControl, 0, "[not an object");
  AgentSend(w);
  Pump();
  EXPECT_TRUE(closed_);
}

TEST_F(AgentLinkTest, DataBeyondCreditIsAViolation) {
  size_t received = 0;
  link_->OpenInbound(7, {[&](std::string_view d) { received += d.size(); }, [] {}});
  std::string chunk(link::kMaxDataChunk, 'x');
  std::string w;
  for (uint32_t sent = 0; sent < link::kInitialWindow; sent += link::kMaxDataChunk) {
    link::AppendFrame(w, link::FrameType::kData, 7, chunk);
  }
  AgentSend(w);
  Pump();
  EXPECT_EQ(received, link::kInitialWindow);
  EXPECT_FALSE(closed_);
  std::string more;
  link::AppendFrame(more, link::FrameType::kData, 7, "y");
  AgentSend(more);
  Pump();
  EXPECT_TRUE(closed_);
}

TEST_F(AgentLinkTest, ConsumedDataReturnsCredit) {
  link_->OpenInbound(3, {[&](std::string_view d) { link_->Consumed(3, static_cast<uint32_t>(d.size())); }, [] {}});
  std::string chunk(link::kMaxDataChunk, 'x');
  std::string w;
  for (int i = 0; i < 8; ++i) link::AppendFrame(w, link::FrameType::kData, 3, chunk);  // 2x the window
  // Send in two halves, reading the WINDOW frames in between like an agent would.
  AgentSend(w.substr(0, w.size() / 2));
  Pump();
  uint64_t credit = 0;
  for (auto& f : AgentReceive()) {
    if (f.type == link::FrameType::kWindow) credit += *link::ParseWindow(f.payload);
  }
  EXPECT_GE(credit, link::kInitialWindow);
  AgentSend(w.substr(w.size() / 2));
  Pump();
  EXPECT_FALSE(closed_);
}

TEST_F(AgentLinkTest, OutboundDataWaitsForCredit) {
  link_->OpenOutbound(9, [] {});
  std::string big(link::kInitialWindow + 1000, 'z');
  link_->Write(9, big);
  link_->WriteEof(9);
  Pump();
  size_t got = 0;
  bool eof = false;
  for (auto& f : AgentReceive()) {
    if (f.type == link::FrameType::kData) got += f.payload.size();
    if (f.type == link::FrameType::kEof) eof = true;
  }
  EXPECT_EQ(got, link::kInitialWindow);
  EXPECT_FALSE(eof);
  EXPECT_EQ(link_->PendingBytes(), 1000u);
  std::string w;
  link::AppendWindow(w, 9, 4096);
  AgentSend(w);
  Pump();
  got = 0;
  for (auto& f : AgentReceive()) {
    if (f.type == link::FrameType::kData) got += f.payload.size();
    if (f.type == link::FrameType::kEof) eof = true;
  }
  EXPECT_EQ(got, 1000u);
  EXPECT_TRUE(eof);
  EXPECT_EQ(link_->PendingBytes(), 0u);
}

}  // namespace
}  // namespace sandboxd::core
