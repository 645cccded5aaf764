#include "daemon/core/agent_link.h"

#include <spdlog/spdlog.h>

#include "common/base64.h"

namespace sandboxd::core {
namespace {
constexpr size_t kLowWater = 1 << 20;
constexpr uint32_t kWindowBatch = 64 * 1024;
}  // namespace

using nlohmann::json;

AgentLink::AgentLink(boost::asio::io_context& io, UniqueFd fd, std::chrono::milliseconds call_timeout)
    : io_(io), sock_(io), call_timeout_(call_timeout), sweep_(io) {
  boost::system::error_code ec;
  sock_.assign(boost::asio::local::stream_protocol(), fd.Release(), ec);
  if (ec) closed_ = true;
}

AgentLink::~AgentLink() = default;

void AgentLink::Start(EventFn on_event, ClosedFn on_closed) {
  on_event_ = std::move(on_event);
  on_closed_ = std::move(on_closed);
  if (closed_) {
    Fail(Error::Msg("agent link socket unusable"));
    return;
  }
  ReadMore();
}

void AgentLink::Close() {
  if (closed_) return;
  Fail(Error{EPIPE, "agent link closed"});
}

void AgentLink::Fail(const Error& e) {
  if (closed_ && pending_.empty() && inbound_.empty() && !on_closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  sock_.close(ec);
  sweep_.cancel();
  // Detach everything before calling out: callbacks may re-enter.
  auto pending = std::move(pending_);
  pending_.clear();
  auto inbound = std::move(inbound_);
  inbound_.clear();
  outbound_.clear();
  pending_out_bytes_ = 0;
  auto on_closed = std::move(on_closed_);
  on_closed_ = nullptr;
  for (auto& [id, p] : pending) p.reply(std::unexpected(Error{EPIPE, "agent link closed: " + e.message}));
  for (auto& [ch, in] : inbound) {
    if (in.sink.on_eof) in.sink.on_eof();
  }
  if (on_closed) on_closed(e);
}

void AgentLink::ReadMore() {
  auto self = shared_from_this();
  sock_.async_read_some(boost::asio::buffer(rbuf_), [this, self](boost::system::error_code ec, size_t n) {
    if (closed_) return;
    if (ec) {
      Fail(Error::Msg(ec == boost::asio::error::eof ? "agent exited" : "agent link: " + ec.message()));
      return;
    }
    std::span<const char> data(rbuf_.data(), n);
    while (!data.empty() && !closed_) {
      auto used = decoder_.Feed(data);
      if (!used) {
        Fail(used.error());
        return;
      }
      data = data.subspan(*used);
      while (auto f = decoder_.Next()) {
        HandleFrame(std::move(*f));
        if (closed_) return;
      }
    }
    if (!closed_) ReadMore();
  });
}

void AgentLink::HandleFrame(link::Frame&& f) {
  switch (f.type) {
    case link::FrameType::kControl:
      HandleControl(f.payload);
      return;
    case link::FrameType::kData: {
      auto it = inbound_.find(f.channel);
      if (it == inbound_.end()) return;  // late data for a channel we reset
      it->second.in_flight += f.payload.size();
      if (it->second.in_flight > link::kInitialWindow) {
        return Fail(Error::Msg("agent link: agent sent more data than its credit on channel " +
                               std::to_string(f.channel)));
      }
      if (!f.payload.empty() && it->second.sink.on_data) it->second.sink.on_data(f.payload);
      return;
    }
    case link::FrameType::kEof: {
      auto it = inbound_.find(f.channel);
      if (it == inbound_.end()) return;
      auto sink = std::move(it->second.sink);
      inbound_.erase(it);
      if (sink.on_eof) sink.on_eof();
      return;
    }
    case link::FrameType::kWindow: {
      auto credit = link::ParseWindow(f.payload);
      if (!credit) return Fail(Error::Msg("agent link: malformed WINDOW frame"));
      auto it = outbound_.find(f.channel);
      if (it == outbound_.end()) return;
      // Bound credit so a hostile agent cannot make us overflow the counter.
      it->second.credit = static_cast<uint32_t>(
          std::min<uint64_t>(uint64_t{it->second.credit} + *credit, 64ull << 20));
      PumpOutbound(f.channel, it->second);
      return;
    }
    case link::FrameType::kReset: {
      if (auto it = outbound_.find(f.channel); it != outbound_.end()) {
        auto on_reset = std::move(it->second.on_reset);
        DropOutbound(f.channel);
        if (on_reset) on_reset();
      } else if (auto in = inbound_.find(f.channel); in != inbound_.end()) {
        auto sink = std::move(in->second.sink);
        inbound_.erase(in);
        if (sink.on_eof) sink.on_eof();
      }
      return;
    }
  }
}

void AgentLink::HandleControl(const std::string& payload) {
  // The agent's fileRead reply carries up to 512 KiB of base64: take it
  // without the general JSON parser (a byte-at-a-time lexer).
  if (auto fast = MatchBase64Envelope(payload, R"({"id":)", R"(,"ok":{"data":")", R"("}})")) {
    auto it = pending_.find(fast->id);
    if (it == pending_.end()) return;
    auto reply = std::move(it->second.reply);
    pending_.erase(it);
    json ok = json::object();
    ok["data"] = std::string(fast->base64);
    reply(std::move(ok));
    return;
  }
  json j = json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Fail(Error::Msg("agent link: control frame is not a JSON object"));
  if (auto ev = j.find("event"); ev != j.end()) {
    if (!ev->is_string()) return Fail(Error::Msg("agent link: malformed event"));
    if (on_event_) on_event_(j);
    return;
  }
  auto id = j.find("id");
  if (id == j.end() || !id->is_number_unsigned()) return Fail(Error::Msg("agent link: reply without id"));
  auto it = pending_.find(id->get<uint64_t>());
  if (it == pending_.end()) return;  // timed out already
  auto reply = std::move(it->second.reply);
  pending_.erase(it);
  if (auto ok = j.find("ok"); ok != j.end()) {
    reply(std::move(*ok));
    return;
  }
  auto err = j.find("err");
  if (err != j.end() && err->is_object()) {
    int code = err->value("errno", 0);
    std::string msg = err->contains("message") && (*err)["message"].is_string() ? (*err)["message"].get<std::string>()
                                                                                   : std::string("agent error");
    reply(std::unexpected(Error{code, msg}));
    return;
  }
  reply(std::unexpected(Error{EPROTO, "agent sent a malformed reply"}));
}

void AgentLink::Call(const std::string& op, json params, ReplyFn reply, std::chrono::milliseconds timeout) {
  if (closed_) {
    reply(std::unexpected(Error{EPIPE, "agent link closed"}));
    return;
  }
  uint64_t id = next_id_++;
  if (!params.is_object()) params = json::object();
  params["id"] = id;
  params["op"] = op;
  auto deadline = timeout == kNoDeadline ? std::chrono::steady_clock::time_point::max()
                                         : std::chrono::steady_clock::now() + (timeout.count() ? timeout : call_timeout_);
  pending_.emplace(id, Pending{std::move(reply), deadline});
  Send(link::FrameType::kControl, 0, params.dump());
  if (timeout != kNoDeadline) ArmSweep();
}

void AgentLink::ArmSweep() {
  if (sweep_armed_ || closed_) return;
  sweep_armed_ = true;
  sweep_.expires_after(std::chrono::milliseconds(500));
  auto self = shared_from_this();
  sweep_.async_wait([this, self](boost::system::error_code ec) {
    sweep_armed_ = false;
    if (ec || closed_) return;
    auto now = std::chrono::steady_clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.deadline <= now) {
        auto reply = std::move(it->second.reply);
        it = pending_.erase(it);
        reply(std::unexpected(Error{ETIMEDOUT, "the sandbox agent did not answer in time"}));
      } else {
        ++it;
      }
    }
    bool any_deadline = false;
    for (auto& [pid, p] : pending_) any_deadline |= p.deadline != std::chrono::steady_clock::time_point::max();
    if (any_deadline) ArmSweep();
  });
}

void AgentLink::OpenInbound(uint32_t ch, Sink sink) { inbound_[ch] = Inbound{std::move(sink), 0}; }

void AgentLink::Consumed(uint32_t ch, uint32_t n) {
  auto it = inbound_.find(ch);
  if (it == inbound_.end() || closed_) return;
  it->second.unacked += n;
  if (it->second.unacked >= kWindowBatch) {
    link::AppendWindow(wbuf_, ch, it->second.unacked);
    it->second.in_flight -= std::min<uint64_t>(it->second.in_flight, it->second.unacked);
    it->second.unacked = 0;
    Flush();
  }
}

void AgentLink::ResetInbound(uint32_t ch) {
  if (inbound_.erase(ch) && !closed_) Send(link::FrameType::kReset, ch, {});
}

void AgentLink::OpenOutbound(uint32_t ch, std::function<void()> on_reset) {
  Outbound o;
  o.on_reset = std::move(on_reset);
  outbound_[ch] = std::move(o);
}

void AgentLink::Write(uint32_t ch, std::string_view data) {
  auto it = outbound_.find(ch);
  if (it == outbound_.end() || closed_ || it->second.eof_pending) return;
  while (!data.empty()) {
    size_t n = std::min<size_t>(data.size(), link::kMaxDataChunk);
    it->second.queue.emplace_back(data.substr(0, n));
    pending_out_bytes_ += n;
    data.remove_prefix(n);
  }
  PumpOutbound(ch, it->second);
}

size_t AgentLink::QueuedBytes(uint32_t ch) const {
  auto it = outbound_.find(ch);
  if (it == outbound_.end()) return 0;
  size_t n = 0;
  for (const auto& s : it->second.queue) n += s.size();
  return n;
}

void AgentLink::WriteEof(uint32_t ch) {
  auto it = outbound_.find(ch);
  if (it == outbound_.end() || closed_) return;
  it->second.eof_pending = true;
  PumpOutbound(ch, it->second);
}

void AgentLink::AbortOutbound(uint32_t ch) {
  if (!outbound_.count(ch)) return;
  DropOutbound(ch);
  if (!closed_) Send(link::FrameType::kReset, ch, {});
}

void AgentLink::DropOutbound(uint32_t ch) {
  auto it = outbound_.find(ch);
  if (it == outbound_.end()) return;
  for (auto& s : it->second.queue) pending_out_bytes_ -= s.size();
  outbound_.erase(it);
  if (on_drain_ && pending_out_bytes_ < kLowWater) on_drain_();
}

void AgentLink::PumpOutbound(uint32_t ch, Outbound& o) {
  bool sent = false;
  while (!o.queue.empty() && o.credit > 0) {
    std::string& front = o.queue.front();
    size_t n = std::min<size_t>(front.size(), o.credit);
    Send(link::FrameType::kData, ch, std::string_view(front).substr(0, n));
    o.credit -= static_cast<uint32_t>(n);
    pending_out_bytes_ -= n;
    sent = true;
    if (n == front.size()) o.queue.pop_front();
    else front.erase(0, n);
  }
  if (o.queue.empty() && o.eof_pending) {
    Send(link::FrameType::kEof, ch, {});
    outbound_.erase(ch);  // `o` dangles from here on
    sent = true;
  }
  if (sent && on_drain_ && pending_out_bytes_ < kLowWater) on_drain_();
}

void AgentLink::Send(link::FrameType t, uint32_t ch, std::string_view payload) {
  link::AppendFrame(wbuf_, t, ch, payload);
  Flush();
}

void AgentLink::Flush() {
  if (write_busy_ || wbuf_.empty() || closed_) return;
  write_busy_ = true;
  writing_.swap(wbuf_);
  wbuf_.clear();
  auto self = shared_from_this();
  boost::asio::async_write(sock_, boost::asio::buffer(writing_), [this, self](boost::system::error_code ec, size_t) {
    write_busy_ = false;
    writing_.clear();
    if (closed_) return;
    if (ec) {
      Fail(Error::Msg("agent link write: " + ec.message()));
      return;
    }
    Flush();
  });
}

}  // namespace sandboxd::core
