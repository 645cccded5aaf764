// SSH usernames handed out by exposeSsh: each is a random credential bound to
// one sandbox (the username is all a client needs to log in, as with Deno
// Sandbox). Event-loop thread only.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace sandboxd::ssh {

struct SandboxRef {
  std::string org;
  std::string id;
};

class UserRegistry {
 public:
  // The username of sandbox `id` (created on first use, then the same one for
  // as long as the sandbox is registered): 26 characters of lower-case
  // base32, 130 random bits.
  std::string Expose(const std::string& org, const std::string& id);

  // The sandbox `username` names. Usernames are stored as SHA-256 hashes, so
  // lookup timing says nothing about the names that exist.
  std::optional<SandboxRef> Lookup(std::string_view username) const;

  // Forgets every username whose sandbox `alive` says is gone.
  void Prune(const std::function<bool(const SandboxRef&)>& alive);

  size_t size() const { return by_hash_.size(); }

  static bool IsWellFormed(std::string_view username);

 private:
  struct Entry {
    SandboxRef ref;
    std::string username;
  };
  std::map<std::string, Entry> by_hash_;           // sha256(username) → entry
  std::map<std::string, std::string> by_sandbox_;  // sandbox id → sha256(username)
};

}  // namespace sandboxd::ssh
