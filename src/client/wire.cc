#include "client/wire.h"

#include "common/base64.h"
#include "common/signals.h"

#include <csignal>
#include <ctime>
#include <regex>

namespace sandboxd::client {
namespace {

// JS parseInt(s, 10): optional leading whitespace and sign, then digits.
std::optional<long long> JsParseInt(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  size_t start = i;
  long long value = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    if (value > 1'000'000'000'000LL) return std::nullopt;  // absurd: treat as invalid
    value = value * 10 + (s[i] - '0');
    ++i;
  }
  if (i == start) return std::nullopt;
  return negative ? -value : value;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view raw) {
  std::string value;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '%' && i + 2 < raw.size()) {
      int hi = HexValue(raw[i + 1]), lo = HexValue(raw[i + 2]);
      if (hi >= 0 && lo >= 0) {
        value += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    value += raw[i] == '+' ? ' ' : raw[i];
  }
  return value;
}

}  // namespace

std::string Base64Encode(std::string_view bytes) { return ::sandboxd::Base64Encode(bytes); }

Result<std::string> Base64Decode(std::string_view text) {
  auto out = ::sandboxd::Base64Decode(text);
  if (!out) return Fail(kProtocolError, "base64: malformed data");
  return std::move(*out);
}

std::string Endpoint::HostHeader() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + port;
}

std::string Endpoint::Origin() const { return scheme + "://" + HostHeader(); }

Result<Endpoint> ParseEndpoint(std::string_view url) {
  Endpoint ep;
  auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    return Fail(kInvalidArgument, "invalid endpoint URL '" + std::string(url) + "': missing scheme");
  }
  ep.scheme = std::string(url.substr(0, sep));
  for (auto& c : ep.scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ep.scheme == "ws") ep.scheme = "http";
  if (ep.scheme == "wss") ep.scheme = "https";
  if (ep.scheme != "http" && ep.scheme != "https") {
    return Fail(kInvalidArgument, "invalid endpoint URL '" + std::string(url) + "': scheme must be http or https");
  }
  std::string_view rest = url.substr(sep + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (auto at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
  std::string_view host = rest, port;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return Fail(kInvalidArgument, "invalid endpoint URL: unterminated IPv6 literal");
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Fail(kInvalidArgument, "invalid endpoint URL: junk after IPv6 literal");
      port = after.substr(1);
    }
  } else if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return Fail(kInvalidArgument, "invalid endpoint URL '" + std::string(url) + "': empty host");
  if (!port.empty()) {
    auto n = JsParseInt(port);
    if (!n || *n <= 0 || *n > 65535 || std::to_string(*n) != port) {
      return Fail(kInvalidArgument, "invalid endpoint URL '" + std::string(url) + "': bad port");
    }
  }
  ep.host = std::string(host);
  ep.port = port.empty() ? (ep.scheme == "https" ? "443" : "80") : std::string(port);
  return ep;
}

bool IsValidSandboxId(std::string_view id) {
  static const std::regex kRe("^sbx_([a-z]{3})_[0-9a-hjkmnp-z]{20}$");
  return std::regex_match(id.begin(), id.end(), kRe);
}

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  auto invalid = [&] {
    return Fail(kInvalidArgument, "invalid timeout '" + std::string(text) +
                                      "': expected a duration like \"30s\" or \"5m\"");
  };
  if (text.empty()) return invalid();
  long long unit_ms;
  if (text.back() == 's') {
    unit_ms = 1000;
  } else if (text.back() == 'm') {
    unit_ms = 60'000;
  } else {
    return invalid();
  }
  auto n = JsParseInt(text.substr(0, text.size() - 1));
  if (!n || *n <= 0) return invalid();
  return std::chrono::milliseconds(*n * unit_ms);
}

Result<std::optional<std::chrono::milliseconds>> ParseTimeout(std::string_view text) {
  if (text.empty() || text == "session") return std::optional<std::chrono::milliseconds>();
  auto d = ParseDuration(text);
  if (!d) return std::unexpected(d.error());
  return std::optional<std::chrono::milliseconds>(*d);
}

std::string BuildConfigJson(const SandboxConfig& config) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (config.stop_at_ms) j["stop_at_ms"] = *config.stop_at_ms;
  j["memory_mb"] = config.memory_mb;
  if (!config.labels.empty()) {
    nlohmann::ordered_json labels = nlohmann::ordered_json::object();
    for (const auto& [k, v] : config.labels) labels[k] = v;
    j["labels"] = std::move(labels);
  }
  j["volumes"] = nlohmann::ordered_json::array();
  if (config.allow_net) j["allow_net"] = *config.allow_net;
  if (!config.secrets.empty()) {
    nlohmann::ordered_json secrets = nlohmann::ordered_json::object();
    for (const auto& s : config.secrets) secrets[s.name] = {{"hosts", s.hosts}, {"value", s.value}};
    j["secrets"] = std::move(secrets);
  }
  if (config.region) j["region"] = *config.region;
  if (config.isolation) j["isolation"] = *config.isolation;
  // ensure_ascii=false: non-ASCII stays UTF-8 here and becomes Latin-1 below,
  // exactly like JSON.stringify + btoa.
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

Result<std::string> EncodeConfigHeader(std::string_view json_utf8) {
  std::string latin1;
  latin1.reserve(json_utf8.size());
  for (size_t i = 0; i < json_utf8.size();) {
    auto b = static_cast<unsigned char>(json_utf8[i]);
    unsigned cp;
    size_t len;
    if (b < 0x80) {
      cp = b, len = 1;
    } else if ((b & 0xE0) == 0xC0) {
      cp = b & 0x1F, len = 2;
    } else if ((b & 0xF0) == 0xE0) {
      cp = b & 0x0F, len = 3;
    } else if ((b & 0xF8) == 0xF0) {
      cp = b & 0x07, len = 4;
    } else {
      return Fail(kInvalidArgument, "config is not valid UTF-8");
    }
    if (i + len > json_utf8.size()) return Fail(kInvalidArgument, "config is not valid UTF-8");
    for (size_t k = 1; k < len; ++k) {
      auto c = static_cast<unsigned char>(json_utf8[i + k]);
      if ((c & 0xC0) != 0x80) return Fail(kInvalidArgument, "config is not valid UTF-8");
      cp = (cp << 6) | (c & 0x3F);
    }
    if (cp > 0xFF) {
      return Fail(kInvalidArgument,
                  "config contains a character above U+00FF, which the protocol (Latin-1) cannot carry");
    }
    latin1 += static_cast<char>(cp);
    i += len;
  }
  return Base64Encode(latin1);
}

std::string FormUrlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '*' || c == '-' || c == '.' || c == '_') {
      out += static_cast<char>(c);
    } else if (c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string LabelQuery(const Labels& labels) {
  std::string q;
  for (const auto& [k, v] : labels) {
    if (!q.empty()) q += '&';
    q += FormUrlEncode("labels[" + k + "]");
    q += '=';
    q += FormUrlEncode(v);
  }
  return q;
}

std::optional<std::string> NextCursorFromLink(std::string_view link) {
  // Same parsing as the SDK: split on ',', each part on ';'.
  size_t pos = 0;
  while (pos <= link.size()) {
    size_t comma = link.find(',', pos);
    std::string_view part = link.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    pos = comma == std::string_view::npos ? link.size() + 1 : comma + 1;
    size_t semi = part.find(';');
    if (semi == std::string_view::npos) continue;
    std::string_view url = part.substr(0, semi), rel = part.substr(semi + 1);
    if (rel.find("rel=\"next\"") == std::string_view::npos && rel.find("rel=next") == std::string_view::npos) continue;
    auto lt = url.find('<'), gt = url.find('>');
    if (lt == std::string_view::npos || gt == std::string_view::npos || gt < lt) continue;
    url = url.substr(lt + 1, gt - lt - 1);
    auto q = url.find('?');
    if (q == std::string_view::npos) continue;
    std::string_view query = url.substr(q + 1);
    while (!query.empty()) {
      auto amp = query.find('&');
      std::string_view kv = query.substr(0, amp);
      if (kv.substr(0, 7) == "cursor=") {
        std::string value = PercentDecode(kv.substr(7));
        return value;
      }
      if (amp == std::string_view::npos) break;
      query = query.substr(amp + 1);
    }
  }
  return std::nullopt;
}

Error DecodeHttpError(int status, std::string_view body) {
  Error e;
  e.http_status = status;
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("code") && j.contains("message")) {
    e.code = j["code"].is_string() ? j["code"].get<std::string>() : j["code"].dump();
    e.message = j["message"].is_string() ? j["message"].get<std::string>() : j["message"].dump();
    return e;
  }
  e.code = kHttpError;
  e.message = body.empty() ? "HTTP status " + std::to_string(status) : std::string(body);
  return e;
}

Error DecodeErrorObject(const nlohmann::json& obj) {
  Error e;
  if (!obj.is_object()) {
    e.code = kProtocolError;
    e.message = obj.is_string() ? obj.get<std::string>() : "malformed error object: " + obj.dump();
    return e;
  }
  auto str = [&](const char* key) -> std::string {
    auto it = obj.find(key);
    return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  e.kind = str("constructorName");
  e.message = str("message");
  e.code = str("code");
  if (e.code.empty()) e.code = e.kind.empty() ? std::string("Error") : e.kind;
  if (e.kind == "DOMException" && !str("name").empty()) e.code = str("name");
  return e;
}

Result<nlohmann::json> DecodeRpcResponse(const nlohmann::json& response) {
  if (!response.is_object()) return Fail(kProtocolError, "response is not an object");
  if (auto err = response.find("error"); err != response.end() && !err->is_null()) {
    Error e;
    e.code = kRpcError;
    int code = err->is_object() && err->contains("code") && (*err)["code"].is_number_integer()
                   ? (*err)["code"].get<int>()
                   : 0;
    std::string msg = err->is_object() && err->contains("message") && (*err)["message"].is_string()
                          ? (*err)["message"].get<std::string>()
                          : err->dump();
    e.message = "JSON-RPC error " + std::to_string(code) + ": " + msg;
    return Fail(std::move(e));
  }
  auto result = response.find("result");
  if (result == response.end() || !result->is_object()) {
    return Fail(kProtocolError, "response has no result object");
  }
  if (auto err = result->find("error"); err != result->end() && !err->is_null()) {
    return Fail(DecodeErrorObject(*err));
  }
  if (auto ok = result->find("ok"); ok != result->end()) return *ok;
  return nlohmann::json(nullptr);
}

Result<std::optional<StreamNotification>> ParseStreamNotification(const nlohmann::json& message) {
  if (!message.is_object() || message.contains("id")) return std::optional<StreamNotification>();
  auto method = message.find("method");
  if (method == message.end() || !method->is_string()) return std::optional<StreamNotification>();
  const std::string& m = method->get_ref<const std::string&>();
  static constexpr std::string_view kPrefix = "$sandbox.stream.";
  if (m.compare(0, kPrefix.size(), kPrefix) != 0) return std::optional<StreamNotification>();
  std::string_view kind = std::string_view(m).substr(kPrefix.size());
  StreamNotification n;
  if (kind == "start") {
    n.event = StreamEvent::kStart;
  } else if (kind == "enqueue") {
    n.event = StreamEvent::kEnqueue;
  } else if (kind == "end") {
    n.event = StreamEvent::kEnd;
  } else if (kind == "error") {
    n.event = StreamEvent::kError;
  } else if (kind == "cancel") {
    n.event = StreamEvent::kCancel;
  } else {
    return Fail(kProtocolError, "unknown stream notification " + m);
  }
  auto params = message.find("params");
  if (params == message.end() || !params->is_object()) return Fail(kProtocolError, m + ": missing params");
  auto id = params->find("streamId");
  if (id == params->end() || !id->is_number_integer()) return Fail(kProtocolError, m + ": streamId must be an integer");
  n.stream_id = id->get<std::int64_t>();
  if (n.event == StreamEvent::kEnqueue) {
    auto data = params->find("data");
    if (data == params->end() || !data->is_string()) return Fail(kProtocolError, m + ": data must be a string");
    auto bytes = Base64Decode(data->get_ref<const std::string&>());
    if (!bytes) return std::unexpected(bytes.error().Wrap(m));
    n.data = std::move(*bytes);
  } else if (n.event == StreamEvent::kError || n.event == StreamEvent::kCancel) {
    const char* key = n.event == StreamEvent::kError ? "error" : "reason";
    auto e = params->find(key);
    if (e != params->end() && !e->is_null()) n.error = DecodeErrorObject(*e);
  }
  return std::optional<StreamNotification>(std::move(n));
}

namespace {

// A string that base64 text can never equal: it marks the cut-out value.
constexpr std::string_view kBulkMarker = "\\u0000sbx-bulk";
constexpr size_t kBulkMin = 1024;

bool ReplaceMarker(nlohmann::json& j, std::string& bulk) {
  if (j.is_string()) {
    if (j.get_ref<const std::string&>() == std::string_view("\0sbx-bulk", 9)) {
      j = std::move(bulk);
      return true;
    }
    return false;
  }
  if (j.is_structured()) {
    for (auto& v : j) {
      if (ReplaceMarker(v, bulk)) return true;
    }
  }
  return false;
}

}  // namespace

nlohmann::json ParseServerMessage(std::string_view text) {
  if (text.size() >= kBulkMin) {
    // In valid JSON a raw `"key":"` can only be a key followed by a string
    // value (quotes inside strings are escaped).
    for (std::string_view key : {std::string_view("\"data\":\""), std::string_view("\"ok\":\"")}) {
      size_t at = text.find(key);
      if (at == std::string_view::npos) continue;
      size_t begin = at + key.size();
      size_t end = text.find('"', begin);
      if (end == std::string_view::npos || end - begin < kBulkMin) continue;
      std::string_view value = text.substr(begin, end - begin);
      if (value.find('\\') != std::string_view::npos) continue;
      std::string rest;
      rest.reserve(text.size() - value.size() + kBulkMarker.size());
      rest.append(text.substr(0, begin)).append(kBulkMarker).append(text.substr(end));
      nlohmann::json j = nlohmann::json::parse(rest, nullptr, /*allow_exceptions=*/false);
      std::string bulk(value);
      if (j.is_discarded() || !ReplaceMarker(j, bulk)) break;  // fall back
      return j;
    }
  }
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

std::string MakeStreamNotification(StreamEvent event, std::int64_t stream_id, std::string_view data) {
  if (event == StreamEvent::kEnqueue) {
    // Built directly: base64 needs no JSON escaping, and dumping a long
    // string through the serializer costs as much as the encoding.
    std::string b64 = Base64Encode(data);
    std::string out;
    out.reserve(b64.size() + 96);
    out.append(R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":)")
        .append(std::to_string(stream_id))
        .append(R"(,"data":")")
        .append(b64)
        .append(R"("}})");
    return out;
  }
  const char* method = "";
  switch (event) {
    case StreamEvent::kStart: method = "$sandbox.stream.start"; break;
    case StreamEvent::kEnqueue: method = "$sandbox.stream.enqueue"; break;
    case StreamEvent::kEnd: method = "$sandbox.stream.end"; break;
    case StreamEvent::kError: method = "$sandbox.stream.error"; break;
    case StreamEvent::kCancel: method = "$sandbox.stream.cancel"; break;
  }
  nlohmann::ordered_json j;
  j["jsonrpc"] = "2.0";
  j["method"] = method;
  j["params"]["streamId"] = stream_id;
  if (event == StreamEvent::kEnqueue) j["params"]["data"] = Base64Encode(data);
  if (event == StreamEvent::kError) j["params"]["error"] = nullptr;
  if (event == StreamEvent::kCancel) j["params"]["reason"] = nullptr;
  return j.dump();
}

std::string MakeRequest(std::int64_t id, std::string_view method, const nlohmann::json& params) {
  nlohmann::ordered_json j;
  j["jsonrpc"] = "2.0";
  j["id"] = id;
  j["method"] = method;
  j["params"] = params.is_null() ? nlohmann::json::object() : params;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int ProcessStatus::ExitCode() const {
  if (signal) {
    if (code >= 128) return code;
    int n = SignalNumber(*signal);
    return n > 0 ? 128 + n : (code != 0 ? code : 1);
  }
  return code;
}

Result<ProcessStatus> DecodeProcessStatus(const nlohmann::json& ok) {
  if (!ok.is_object()) return Fail(kProtocolError, "process status is not an object");
  ProcessStatus s;
  auto success = ok.find("success");
  auto code = ok.find("code");
  if (success == ok.end() || !success->is_boolean()) return Fail(kProtocolError, "process status: success must be a boolean");
  if (code == ok.end() || !code->is_number()) return Fail(kProtocolError, "process status: code must be a number");
  s.success = success->get<bool>();
  s.code = code->is_number_integer() ? code->get<int>() : static_cast<int>(code->get<double>());
  if (auto sig = ok.find("signal"); sig != ok.end() && sig->is_string()) s.signal = sig->get<std::string>();
  if (auto oom = ok.find("oom"); oom != ok.end() && oom->is_string()) s.oom = oom->get<std::string>();
  return s;
}

int SignalNumber(std::string_view name) {
  std::string full = name.starts_with("SIG") ? std::string(name) : "SIG" + std::string(name);
  return ::sandboxd::SignalNumber(full).value_or(0);
}

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatIsoUtc(std::int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace sandboxd::client
