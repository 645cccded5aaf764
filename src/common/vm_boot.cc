#include "common/vm_boot.h"

#include <nlohmann/json.hpp>

#include "common/frame.h"

namespace sandboxd::vmboot {
namespace {

using nlohmann::json;

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

int Nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool ValidHostname(std::string_view h) {
  if (h.empty() || h.size() > 64) return false;
  for (char c : h) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string Control(const json& j) {
  std::string out;
  link::AppendFrame(out, link::FrameType::kControl, 0, j.dump());
  return out;
}

}  // namespace

std::string AwaitingConfigFrame() {
  return Control({{"event", "awaiting-config"}, {"version", kVersion}});
}

std::string ConfigFrame(const BootConfig& c) {
  return Control({{"op", "config"},
                  {"version", kVersion},
                  {"hostname", c.hostname},
                  {"pids_max", c.pids_max},
                  {"realtime_ns", c.realtime_ns},
                  {"entropy", Hex(c.entropy)}});
}

bool IsAwaitingConfig(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  auto ev = j.find("event");
  auto v = j.find("version");
  return ev != j.end() && *ev == "awaiting-config" && v != j.end() && *v == kVersion;
}

Result<BootConfig> ParseConfig(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return FailMsg("boot config: not a JSON object");
  auto op = j.find("op");
  if (op == j.end() || *op != "config") return FailMsg("boot config: not a config message");
  auto v = j.find("version");
  if (v == j.end() || *v != kVersion) return FailMsg("boot config: unsupported version");
  BootConfig c;
  auto h = j.find("hostname");
  if (h == j.end() || !h->is_string() || !ValidHostname(h->get_ref<const std::string&>())) {
    return FailMsg("boot config: invalid hostname");
  }
  c.hostname = h->get<std::string>();
  auto p = j.find("pids_max");
  if (p == j.end() || !p->is_number_unsigned() || p->get<uint64_t>() < 16 ||
      p->get<uint64_t>() > 4194304) {
    return FailMsg("boot config: pids_max must be 16..4194304");
  }
  c.pids_max = p->get<uint32_t>();
  auto t = j.find("realtime_ns");
  if (t == j.end() || !t->is_number_integer() || t->get<int64_t>() <= 0) {
    return FailMsg("boot config: invalid realtime_ns");
  }
  c.realtime_ns = t->get<int64_t>();
  auto e = j.find("entropy");
  if (e == j.end() || !e->is_string()) return FailMsg("boot config: no entropy");
  const auto& hex = e->get_ref<const std::string&>();
  if (hex.empty() || hex.size() % 2 != 0 || hex.size() / 2 > kMaxEntropyBytes) {
    return FailMsg("boot config: entropy must be 1.." + std::to_string(kMaxEntropyBytes) +
                   " bytes of hex");
  }
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = Nibble(hex[i]), lo = Nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return FailMsg("boot config: entropy is not lower-case hex");
    c.entropy += static_cast<char>(hi << 4 | lo);
  }
  return c;
}

}  // namespace sandboxd::vmboot
