#include "daemon/net/egress_policy.h"

namespace sandboxd::net {

Result<std::shared_ptr<const EgressPolicy>> EgressPolicy::Build(std::string sandbox_id,
                                                                const std::vector<std::string>& allow_net,
                                                                std::vector<SecretBinding> secrets,
                                                                std::shared_ptr<SandboxCa> ca) {
  std::vector<std::string> all = allow_net;
  for (const auto& s : secrets) {
    for (auto& h : s.hosts.ToStrings()) all.push_back(std::move(h));
  }
  auto reachable = AllowList::Parse(all);
  if (!reachable) return std::unexpected(reachable.error());
  auto p = std::shared_ptr<EgressPolicy>(new EgressPolicy());
  p->sandbox_id_ = std::move(sandbox_id);
  p->allow_net_ = allow_net;
  p->reachable_ = std::make_shared<const AllowList>(std::move(*reachable));
  p->secrets_ = std::move(secrets);
  p->ca_ = std::move(ca);
  return std::shared_ptr<const EgressPolicy>(std::move(p));
}

Result<std::shared_ptr<const EgressPolicy>> EgressPolicy::WithAllowNet(
    const std::vector<std::string>& allow_net) const {
  return Build(sandbox_id_, allow_net, secrets_, ca_);
}

std::vector<SubstitutionPair> EgressPolicy::SubstitutionsFor(std::string_view host, uint16_t port) const {
  std::vector<SubstitutionPair> out;
  for (const auto& s : secrets_) {
    if (s.hosts.AllowsName(host, port)) out.push_back({s.placeholder, s.value});
  }
  return out;
}

std::vector<SubstitutionPair> EgressPolicy::AllPlaceholders() const {
  std::vector<SubstitutionPair> out;
  for (const auto& s : secrets_) out.push_back({s.placeholder, s.value});
  return out;
}

}  // namespace sandboxd::net
