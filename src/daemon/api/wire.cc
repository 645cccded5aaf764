#include "daemon/api/wire.h"

#include "common/signals.h"

#include <cstring>
#include <ctime>

namespace sandboxd::api {

using nlohmann::json;

json ErrorObject(const std::string& constructor, const std::string& code, const std::string& message) {
  json e = {{"constructorName", constructor}, {"message", message}};
  e["code"] = code.empty() ? json(nullptr) : json(code);
  return e;
}

json ErrorObjectFromErrno(int err, const std::string& message) {
  const char* name = err > 0 ? strerrorname_np(err) : nullptr;
  std::string code = name ? name : "";
  const char* cls = "Error";
  switch (err) {
    case ENOENT: cls = "NotFound"; break;
    case EACCES: case EPERM: cls = "PermissionDenied"; break;
    case EEXIST: cls = "AlreadyExists"; break;
    case EISDIR: cls = "IsADirectory"; break;
    case ENOTDIR: cls = "NotADirectory"; break;
    case ELOOP: cls = "FilesystemLoop"; break;
    case ECONNREFUSED: cls = "ConnectionRefused"; break;
    case ECONNRESET: cls = "ConnectionReset"; break;
    case ECONNABORTED: cls = "ConnectionAborted"; break;
    case ENOTCONN: cls = "NotConnected"; break;
    case EADDRINUSE: cls = "AddrInUse"; break;
    case EADDRNOTAVAIL: cls = "AddrNotAvailable"; break;
    case EPIPE: cls = "BrokenPipe"; break;
    case ETIMEDOUT: cls = "TimedOut"; break;
    case EINTR: cls = "Interrupted"; break;
    case EAGAIN: cls = "WouldBlock"; break;
    case EBUSY: cls = "Busy"; break;
    case ENETUNREACH: cls = "NetworkUnreachable"; break;
    case ENOTSUP: cls = "NotSupported"; break;
    case EINVAL: cls = "TypeError"; break;
    default: break;
  }
  return ErrorObject(cls, code, message);
}

std::string ApiErrorBody(const core::ApiError& e) { return json{{"code", e.code}, {"message", e.message}}.dump(); }

json ProcessStatusJson(const core::ExitStatus& st) {
  json j;
  j["success"] = st.code == 0 && st.signal == 0;
  j["code"] = st.code;
  std::string sig = st.signal ? SignalName(st.signal) : "";
  j["signal"] = sig.empty() ? json(nullptr) : json(sig);
  j["oom"] = st.oom ? json("high-confidence") : json(nullptr);
  return j;
}

std::string IsoTime(int64_t ms) {
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace sandboxd::api
