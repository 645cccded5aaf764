#include "daemon/ssh/user_registry.h"

#include "daemon/core/ids.h"

namespace sandboxd::ssh {
namespace {
constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
constexpr size_t kUsernameLength = 26;  // 26 × 5 = 130 bits

std::string NewUsername() {
  // 17 random bytes = 136 bits, of which the first 130 are used.
  std::string bytes = core::RandomBytes(17);
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 5 && out.size() < kUsernameLength) {
      out.push_back(kAlphabet[(acc >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  return out;
}
}  // namespace

bool UserRegistry::IsWellFormed(std::string_view username) {
  if (username.size() != kUsernameLength) return false;
  for (char c : username) {
    if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'))) return false;
  }
  return true;
}

std::string UserRegistry::Expose(const std::string& org, const std::string& id) {
  if (auto it = by_sandbox_.find(id); it != by_sandbox_.end()) {
    auto e = by_hash_.find(it->second);
    if (e != by_hash_.end() && e->second.ref.org == org) return e->second.username;
  }
  std::string name = NewUsername();
  std::string hash = core::Sha256Hex(name);
  by_hash_[hash] = Entry{SandboxRef{org, id}, name};
  by_sandbox_[id] = hash;
  return name;
}

std::optional<SandboxRef> UserRegistry::Lookup(std::string_view username) const {
  if (!IsWellFormed(username)) return std::nullopt;
  auto it = by_hash_.find(core::Sha256Hex(username));
  if (it == by_hash_.end()) return std::nullopt;
  return it->second.ref;
}

void UserRegistry::Prune(const std::function<bool(const SandboxRef&)>& alive) {
  for (auto it = by_hash_.begin(); it != by_hash_.end();) {
    if (alive(it->second.ref)) {
      ++it;
      continue;
    }
    if (auto s = by_sandbox_.find(it->second.ref.id);
        s != by_sandbox_.end() && s->second == it->first) {
      by_sandbox_.erase(s);
    }
    it = by_hash_.erase(it);
  }
}

}  // namespace sandboxd::ssh
