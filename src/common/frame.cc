#include "common/frame.h"

#include <cstring>

namespace sandboxd::link {
namespace {

void PutU32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff),
               static_cast<char>((v >> 16) & 0xff), static_cast<char>((v >> 24) & 0xff)};
  out.append(b, 4);
}

uint32_t GetU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{u[0]} | (uint32_t{u[1]} << 8) | (uint32_t{u[2]} << 16) | (uint32_t{u[3]} << 24);
}

bool KnownType(uint8_t t) { return t >= 1 && t <= 5; }

}  // namespace

void AppendFrame(std::string& out, FrameType type, uint32_t channel, std::string_view payload) {
  PutU32(out, static_cast<uint32_t>(payload.size()));
  PutU32(out, channel);
  out.push_back(static_cast<char>(type));
  out.append(payload);
}

void AppendWindow(std::string& out, uint32_t channel, uint32_t credit) {
  std::string p;
  PutU32(p, credit);
  AppendFrame(out, FrameType::kWindow, channel, p);
}

std::optional<uint32_t> ParseWindow(std::string_view payload) {
  if (payload.size() != 4) return std::nullopt;
  return GetU32(payload.data());
}

Result<size_t> FrameDecoder::Feed(std::span<const char> data) {
  if (failed_) return FailMsg("agent link: decoder already failed");
  size_t used = 0;
  while (used < data.size() && !ready_) {
    if (!current_) {
      size_t take = std::min(kHeaderSize - header_len_, data.size() - used);
      std::memcpy(header_ + header_len_, data.data() + used, take);
      header_len_ += take;
      used += take;
      if (header_len_ < kHeaderSize) break;
      header_len_ = 0;
      uint32_t len = GetU32(header_);
      uint32_t channel = GetU32(header_ + 4);
      auto type = static_cast<uint8_t>(header_[8]);
      if (len > kMaxFramePayload) {
        failed_ = true;
        return FailMsg("agent link: frame of " + std::to_string(len) + " bytes exceeds limit");
      }
      if (!KnownType(type)) {
        failed_ = true;
        return FailMsg("agent link: unknown frame type " + std::to_string(type));
      }
      auto ft = static_cast<FrameType>(type);
      if ((ft == FrameType::kControl) != (channel == 0) ||
          (ft == FrameType::kData && len > kMaxDataChunk)) {
        failed_ = true;
        return FailMsg("agent link: malformed frame header");
      }
      current_.emplace();
      current_->type = ft;
      current_->channel = channel;
      current_->payload.reserve(len);
      want_ = len;
    }
    size_t take = std::min<size_t>(want_, data.size() - used);
    current_->payload.append(data.data() + used, take);
    used += take;
    want_ -= static_cast<uint32_t>(take);
    if (want_ == 0) {
      ready_ = std::move(current_);
      current_.reset();
    }
  }
  return used;
}

std::optional<Frame> FrameDecoder::Next() {
  std::optional<Frame> f = std::move(ready_);
  ready_.reset();
  return f;
}

}  // namespace sandboxd::link
