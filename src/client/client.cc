#include "client/client.h"

#include <cstdlib>

#include "client/http.h"

namespace sandboxd::client {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace

std::string DefaultEndpoint() {
  if (auto v = Env("DENO_SANDBOX_ENDPOINT"); !v.empty()) return v;
  if (auto v = Env("SANDBOX_ENDPOINT"); !v.empty()) return v;
  return "http://127.0.0.1:8080";
}

Result<Client> Client::Create(ClientOptions options) {
  if (options.endpoint.empty()) options.endpoint = DefaultEndpoint();
  if (options.token.empty()) options.token = Env("DENO_DEPLOY_TOKEN");
  if (options.org.empty()) options.org = Env("DENO_DEPLOY_ORG");
  if (options.token.empty()) {
    return Fail("MISSING_TOKEN", "no access token: pass one or set DENO_DEPLOY_TOKEN");
  }
  auto ep = ParseEndpoint(options.endpoint);
  if (!ep) return std::unexpected(ep.error());
  return Client(std::move(options), std::move(*ep));
}

std::vector<std::pair<std::string, std::string>> Client::AuthHeaders() const {
  std::vector<std::pair<std::string, std::string>> h = {
      {"Authorization", "Bearer " + options_.token}};
  if (!options_.org.empty()) h.emplace_back("X-Deno-Org", options_.org);
  return h;
}

Result<std::vector<SandboxInfo>> Client::List(const Labels& labels,
                                              const ListOptions& list_options) const {
  std::vector<SandboxInfo> out;
  std::optional<std::string> cursor;
  for (int page = 0; page < 10'000; ++page) {
    std::string query = LabelQuery(labels);
    auto add = [&](const std::string& kv) {
      if (!query.empty()) query += '&';
      query += kv;
    };
    if (list_options.page_size > 0) add("limit=" + std::to_string(list_options.page_size));
    if (cursor) add("cursor=" + FormUrlEncode(*cursor));
    HttpRequest req{"GET", "/api/v2/sandboxes" + (query.empty() ? "" : "?" + query), "",
                    AuthHeaders()};
    auto res = HttpCall(endpoint_, req, options_.request_timeout);
    if (!res) return std::unexpected(res.error().Wrap("listing sandboxes"));
    if (res->status / 100 != 2) return Fail(DecodeHttpError(res->status, res->body));
    auto j = nlohmann::json::parse(res->body, nullptr, false);
    if (!j.is_array())
      return Fail(kProtocolError, "listing sandboxes: response is not a JSON array");
    for (auto& e : j) {
      if (!e.is_object()) continue;
      SandboxInfo info;
      auto str = [&](const char* k) {
        auto it = e.find(k);
        return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
      };
      info.id = str("id");
      info.created_at = str("createdAt");
      if (auto it = e.find("stoppedAt"); it != e.end() && it->is_string())
        info.stopped_at = it->get<std::string>();
      info.region = str("region");
      info.status = str("status");
      if (auto it = e.find("labels"); it != e.end() && it->is_object()) {
        for (auto& [k, v] : it->items())
          info.labels[k] = v.is_string() ? v.get<std::string>() : v.dump();
      }
      info.raw = e;
      out.push_back(std::move(info));
      if (list_options.max_results > 0 && static_cast<int>(out.size()) >= list_options.max_results)
        return out;
    }
    cursor = NextCursorFromLink(res->link);
    if (!cursor) break;
  }
  return out;
}

Status Client::Kill(std::string_view id) const {
  HttpRequest req{"DELETE", "/api/v3/sandbox/" + FormUrlEncode(id), "", AuthHeaders()};
  auto res = HttpCall(endpoint_, req, options_.request_timeout);
  if (!res) return std::unexpected(res.error().Wrap("killing " + std::string(id)));
  if (res->status / 100 != 2) return Fail(DecodeHttpError(res->status, res->body));
  return {};
}

Result<HttpExposure> Client::ExposeHttp(std::string_view id, int port) const {
  nlohmann::json body = {{"port", port}};
  HttpRequest req{"POST", "/api/v3/sandbox/" + FormUrlEncode(id) + "/expose/http", body.dump(),
                  AuthHeaders()};
  auto res = HttpCall(endpoint_, req, options_.request_timeout);
  if (!res)
    return std::unexpected(
        res.error().Wrap("exposing port " + std::to_string(port) + " of " + std::string(id)));
  if (res->status / 100 != 2) return Fail(DecodeHttpError(res->status, res->body));
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (!j.is_object() || !j.contains("url") || !j["url"].is_string() || !j.contains("domain") ||
      !j["domain"].is_string()) {
    return Fail(kProtocolError, "expose http: response lacks domain/url");
  }
  return HttpExposure{j["domain"].get<std::string>(), j["url"].get<std::string>()};
}

Result<SshAccess> Client::ExposeSsh(std::string_view id) const {
  HttpRequest req{"POST", "/api/v3/sandbox/" + FormUrlEncode(id) + "/expose/ssh", "{}",
                  AuthHeaders()};
  auto res = HttpCall(endpoint_, req, options_.request_timeout);
  if (!res) return std::unexpected(res.error().Wrap("exposing SSH of " + std::string(id)));
  if (res->status / 100 != 2) return Fail(DecodeHttpError(res->status, res->body));
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (!j.is_object() || !j.contains("hostname") || !j["hostname"].is_string() ||
      !j.contains("username") || !j["username"].is_string()) {
    return Fail(kProtocolError, "expose ssh: response lacks hostname/username");
  }
  SshAccess a;
  a.hostname = j["hostname"].get<std::string>();
  a.username = j["username"].get<std::string>();
  // Only the Python SDK reads `port`; without it the standard port is meant.
  if (auto p = j.find("port"); p != j.end() && p->is_number_integer()) {
    int port = p->get<int>();
    if (port < 1 || port > 65535) return Fail(kProtocolError, "expose ssh: port out of range");
    a.port = port;
  }
  return a;
}

Result<std::int64_t> Client::Extend(std::string_view id, std::string_view duration) const {
  auto d = ParseDuration(duration);
  if (!d) return std::unexpected(d.error());
  std::int64_t stop_at = NowMs() + d->count();
  nlohmann::json body = {{"stop_at_ms", stop_at}};
  HttpRequest req{"PATCH", "/api/v3/sandbox/" + FormUrlEncode(id), body.dump(), AuthHeaders()};
  auto res = HttpCall(endpoint_, req, options_.request_timeout);
  if (!res) return std::unexpected(res.error().Wrap("extending " + std::string(id)));
  if (res->status / 100 != 2) return Fail(DecodeHttpError(res->status, res->body));
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (j.is_object() && j.contains("stop_at_ms") && j["stop_at_ms"].is_number()) {
    return j["stop_at_ms"].get<std::int64_t>();
  }
  return Fail(kProtocolError, "extend: response lacks stop_at_ms");
}

namespace {

// Shared tail of GET/PUT .../network.
Result<NetworkInfo> NetworkCall(const Endpoint& endpoint, const HttpRequest& req,
                                std::chrono::milliseconds timeout, const std::string& what) {
  auto res = HttpCall(endpoint, req, timeout);
  if (!res) return std::unexpected(res.error().Wrap(what));
  if (res->status / 100 != 2) return Fail(DecodeHttpError(res->status, res->body));
  auto info = DecodeNetworkInfo(nlohmann::json::parse(res->body, nullptr, false));
  if (!info) return std::unexpected(info.error().Wrap(what));
  return info;
}

}  // namespace

Result<NetworkInfo> Client::GetNetwork(std::string_view id) const {
  HttpRequest req{"GET", "/api/v3/sandboxes/" + FormUrlEncode(id) + "/network", "", AuthHeaders()};
  return NetworkCall(endpoint_, req, options_.request_timeout, "network of " + std::string(id));
}

Result<NetworkInfo> Client::SetAllowNet(std::string_view id,
                                        const std::vector<std::string>& allow_net) const {
  nlohmann::json body = {{"allowNet", allow_net}};
  // replace: invalid UTF-8 in a pattern must not throw; the server then
  // refuses the (non-ASCII) pattern with its own message.
  std::string text = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  HttpRequest req{"PUT", "/api/v3/sandboxes/" + FormUrlEncode(id) + "/network", std::move(text),
                  AuthHeaders()};
  return NetworkCall(endpoint_, req, options_.request_timeout,
                     "setting allowNet of " + std::string(id));
}

}  // namespace sandboxd::client
