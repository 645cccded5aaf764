#include "daemon/ingress/expose_api.h"

#include "daemon/ingress/pid_port.h"

namespace sandboxd::ingress {

using nlohmann::json;

namespace {

// {"port": n} / {"pid": n} / neither, from an object; error text on misuse.
struct TargetParam {
  std::optional<ExposeTarget> target;
  std::string error;
};

TargetParam ReadTarget(const json& o) {
  TargetParam out;
  auto port = o.find("port");
  auto pid = o.find("pid");
  bool has_port = port != o.end() && !port->is_null();
  bool has_pid = pid != o.end() && !pid->is_null();
  if (has_port && has_pid) {
    out.error = "give port or pid, not both";
  } else if (has_port) {
    if (!port->is_number_integer() || port->get<int64_t>() < 1 || port->get<int64_t>() > 65535) {
      out.error = "port must be an integer 1..65535";
    } else {
      out.target = ExposeTarget{static_cast<uint16_t>(port->get<int64_t>()), 0};
    }
  } else if (has_pid) {
    if (!pid->is_number_integer() || pid->get<int64_t>() < 1 || pid->get<int64_t>() > (1 << 22)) {
      out.error = "pid must be a positive integer";
    } else {
      out.target = ExposeTarget{0, pid->get<int64_t>()};
    }
  }
  return out;
}

// A guest's pids are the guest kernel's: only its agent knows them, and it
// is asked when a request arrives (the {pid} is resolved then, as for every
// new upstream connection), so a guest's pid is taken on trust here.
bool PidExists(ExposureSet& set, pid_t init_pid, int64_t pid) {
  if (set.guest()) return true;
  auto h = set.Handles(init_pid);
  return h && ProcessExists((*h)->proc.get(), pid);
}

}  // namespace

core::ApiResult<json> ExposeHttpRest(ExposureSet& set, std::string_view sandbox_id, pid_t init_pid,
                                     const std::optional<Naming>& naming, std::string_view body) {
  if (!naming) {
    return std::unexpected(core::ApiError{
        409, "INGRESS_DISABLED",
        "this server runs without an HTTP ingress (start it with --ingress-listen)"});
  }
  if (!naming->unsupported.empty()) {
    return std::unexpected(core::ApiError{501, "INGRESS_UNSUPPORTED", naming->unsupported});
  }
  if (set.guest() && set.guest_ip() == 0) {
    return std::unexpected(core::ApiError{
        501, "INGRESS_UNSUPPORTED",
        "this microVM sandbox has no network (the daemon runs with --net off), so the ingress "
        "cannot reach it"});
  }
  json b = body.empty() ? json::object() : json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (b.is_discarded() || !b.is_object()) {
    return std::unexpected(
        core::ApiError{400, "INVALID_EXPOSE", "body must be {}, {\"port\": n} or {\"pid\": n}"});
  }
  auto t = ReadTarget(b);
  if (!t.error.empty()) return std::unexpected(core::ApiError{400, "INVALID_EXPOSE", t.error});

  Result<std::string> suffix = FailMsg("");
  if (!t.target) {
    suffix = set.Reserve();
  } else if (t.target->port != 0) {
    suffix = set.ExposePort(t.target->port);
  } else {
    if (!PidExists(set, init_pid, t.target->pid)) {
      return std::unexpected(
          core::ApiError{404, "PROCESS_NOT_FOUND",
                         "no process " + std::to_string(t.target->pid) + " in this sandbox"});
    }
    suffix = set.Reserve();
    if (suffix) (void)set.Bind(*suffix, *t.target);
  }
  if (!suffix) return std::unexpected(core::ApiError{409, "EXPOSE_LIMIT", suffix.error().message});
  std::string host = HostFor(*naming, sandbox_id, *suffix);
  return json{{"domain", host}, {"url", std::string(naming->tls ? "https://" : "http://") + host}};
}

std::expected<void, RpcError> ExposeHttpRpc(ExposureSet& set, std::string_view sandbox_id,
                                            pid_t init_pid, const json& params) {
  auto d = params.find("domain");
  if (d == params.end() || !d->is_string()) {
    return std::unexpected(RpcError{true, 0, "Invalid params: domain must be a string"});
  }
  auto t = ReadTarget(params);
  if (!t.error.empty()) return std::unexpected(RpcError{true, 0, "Invalid params: " + t.error});
  if (!t.target)
    return std::unexpected(RpcError{true, 0, "Invalid params: port or pid is required"});

  const std::string& domain = d->get_ref<const std::string&>();
  auto route = ParseExposedName(domain);
  if (!route || route->sandbox_id != sandbox_id) {
    return std::unexpected(RpcError{
        false, 0,
        "exposeHttp: '" + domain + "' is not a name expose/http handed out for this sandbox"});
  }
  if (t.target->pid != 0 && !PidExists(set, init_pid, t.target->pid)) {
    return std::unexpected(
        RpcError{false, ENOENT,
                 "exposeHttp: no process " + std::to_string(t.target->pid) + " in this sandbox"});
  }
  if (auto st = set.Bind(route->suffix, *t.target); !st) {
    return std::unexpected(
        RpcError{false, 0, "exposeHttp: '" + domain + "': " + st.error().message});
  }
  return {};
}

}  // namespace sandboxd::ingress
