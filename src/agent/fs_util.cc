#include "agent/fs_util.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>

namespace sandboxd::agent::fs {
namespace {

using nlohmann::json;

const json& NullJson() {
  static const json kNull;
  return kNull;
}

std::string Key(const char* key) { return std::string("'") + key + "'"; }

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

// Reads exactly `n` digits at `s[*i]`.
bool Digits(std::string_view s, size_t* i, size_t n, int64_t* out) {
  if (*i + n > s.size()) return false;
  int64_t v = 0;
  for (size_t k = 0; k < n; ++k) {
    char c = s[*i + k];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *i += n;
  *out = v;
  return true;
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

std::unexpected<Error> Invalid(std::string what) {
  return std::unexpected<Error>(Error{EINVAL, std::move(what)});
}

// ---------------------------------------------------------------------------
// Params

const json& Params::Raw(const char* key) const {
  if (!j_.is_object()) return NullJson();
  auto it = j_.find(key);
  return it == j_.end() ? NullJson() : *it;
}

bool Params::Has(const char* key) const { return !Raw(key).is_null(); }

Result<std::optional<std::string>> Params::OptString(const char* key, size_t max_len) const {
  const json& v = Raw(key);
  if (v.is_null()) return std::optional<std::string>();
  if (!v.is_string()) return Invalid(Key(key) + " must be a string");
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() > max_len) return Invalid(Key(key) + " is too long");
  if (s.find('\0') != std::string::npos) return Invalid(Key(key) + " contains a NUL byte");
  return std::optional<std::string>(s);
}

Result<std::optional<std::string>> Params::OptPath(const char* key) const {
  auto s = OptString(key, kMaxPathBytes);
  if (s && *s && (*s)->size() >= kMaxPathBytes) {
    return std::unexpected(Error{ENAMETOOLONG, Key(key) + " is too long"});
  }
  return s;
}

Result<std::string> Params::Path(const char* key) const {
  auto s = OptPath(key);
  if (!s) return std::unexpected(s.error());
  if (!*s) return Invalid("missing " + Key(key));
  return std::move(**s);
}

Result<bool> Params::Bool(const char* key, bool dflt) const {
  const json& v = Raw(key);
  if (v.is_null()) return dflt;
  if (!v.is_boolean()) return Invalid(Key(key) + " must be a boolean");
  return v.get<bool>();
}

Result<std::optional<int64_t>> Params::OptInt(const char* key, int64_t min, int64_t max) const {
  const json& v = Raw(key);
  if (v.is_null()) return std::optional<int64_t>();
  int64_t out;
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(Key(key) + " is out of range");
    }
    out = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    out = v.get<int64_t>();
  } else if (v.is_number_float()) {
    // JS has only doubles; an integral one is an integer.
    double d = v.get<double>();
    if (!std::isfinite(d) || d != std::trunc(d) || std::fabs(d) > 9.007199254740992e15) {
      return Invalid(Key(key) + " must be an integer");
    }
    out = static_cast<int64_t>(d);
  } else {
    return Invalid(Key(key) + " must be an integer");
  }
  if (out < min || out > max) return Invalid(Key(key) + " is out of range");
  return std::optional<int64_t>(out);
}

Result<int64_t> Params::Int(const char* key, int64_t min, int64_t max) const {
  auto v = OptInt(key, min, max);
  if (!v) return std::unexpected(v.error());
  if (!*v) return Invalid("missing " + Key(key));
  return **v;
}

Result<Params> Params::Object(const char* key) const {
  const json& v = Raw(key);
  if (!v.is_null() && !v.is_object()) return Invalid(Key(key) + " must be an object");
  return Params(v);
}

Result<std::optional<std::vector<std::string>>> Params::OptStrings(const char* key) const {
  const json& v = Raw(key);
  if (v.is_null()) return std::optional<std::vector<std::string>>();
  if (!v.is_array()) return Invalid(Key(key) + " must be an array of strings");
  if (v.size() > kMaxListItems) return Invalid(Key(key) + " has too many elements");
  std::vector<std::string> out;
  for (const json& e : v) {
    if (!e.is_string()) return Invalid(Key(key) + " must be an array of strings");
    const auto& s = e.get_ref<const std::string&>();
    if (s.size() > kMaxPathBytes || s.find('\0') != std::string::npos) {
      return Invalid(Key(key) + " has an invalid element");
    }
    out.push_back(s);
  }
  return std::optional<std::vector<std::string>>(std::move(out));
}

// ---------------------------------------------------------------------------
// Credentials

Result<Cred> ParseCred(const json& msg) {
  Params p(msg);
  Cred cred;
  // Required: a missing uid must never mean "root".
  auto uid = p.Int("uid", 0, std::numeric_limits<uint32_t>::max() - 1);
  if (!uid) return std::unexpected(uid.error());
  auto gid = p.Int("gid", 0, std::numeric_limits<uint32_t>::max() - 1);
  if (!gid) return std::unexpected(gid.error());
  auto cwd = p.Path("cwd");
  if (!cwd) return std::unexpected(cwd.error());
  if (!IsAbsolute(*cwd)) return Invalid("'cwd' must be an absolute path");
  cred.uid = static_cast<uint32_t>(*uid);
  cred.gid = static_cast<uint32_t>(*gid);
  cred.cwd = std::move(*cwd);
  return cred;
}

CredScope::CredScope(const Cred& cred) {
  // gid first: setfsgid needs CAP_SETGID, which survives a non-zero fsuid
  // anyway, but this order is right even if it did not.
  syscall(SYS_setfsgid, cred.gid);
  syscall(SYS_setfsuid, cred.uid);
}

CredScope::~CredScope() {
  // Back to 0 restores the filesystem capabilities from the permitted set.
  syscall(SYS_setfsuid, 0);
  syscall(SYS_setfsgid, 0);
}

void DropSupplementaryGroups() { syscall(SYS_setgroups, 0, nullptr); }

int GuardFd(int fd) {
  struct statfs sfs;
  if (fstatfs(fd, &sfs) != 0) return errno;
  if (sfs.f_type != PROC_SUPER_MAGIC) return 0;
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char buf[kMaxPathBytes + 1];
  ssize_t n = readlink(link, buf, sizeof buf);
  if (n <= 0 || static_cast<size_t>(n) >= sizeof buf) return EACCES;
  std::string_view p(buf, static_cast<size_t>(n));
  if (p == "/proc") return 0;
  if (!p.starts_with("/proc/")) return EACCES;  // procfs somewhere unexpected: refuse
  p.remove_prefix(6);
  std::string_view first = p.substr(0, p.find('/'));
  if (first.empty() || first.find_first_not_of("0123456789") != std::string_view::npos) return 0;
  if (first.size() > 10) return EACCES;
  std::string id(first);
  if (std::stol(id) == getpid()) return EACCES;
  // A thread id of ours: /proc/<tid> works although it is not listed.
  std::string task = "/proc/self/task/" + id;
  if (access(task.c_str(), F_OK) == 0) return EACCES;
  return 0;
}

int UserOpen(const char* path, int flags, mode_t mode) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_NO_MAGICLINKS;
  long fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
  if (fd < 0 && errno == ENOSYS) return open(path, flags, mode);  // before Linux 5.6
  return static_cast<int>(fd);
}

int OpenGuardedPath(const std::string& path, bool follow) {
  int fd = UserOpen(path.c_str(), O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
  if (fd < 0) return -errno;
  if (int err = GuardFd(fd); err != 0) {
    close(fd);
    return -err;
  }
  return fd;
}

void RestrictThreadCapabilities() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &hdr, data) != 0) return;
  uint64_t keep = 0;
  for (int cap : {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID,
                  CAP_SETGID, CAP_SETUID, CAP_MKNOD, CAP_LINUX_IMMUTABLE}) {
    keep |= uint64_t{1} << cap;
  }
  uint64_t eff = (uint64_t{data[1].effective} << 32 | data[0].effective) & keep;
  data[0].effective = static_cast<uint32_t>(eff);
  data[1].effective = static_cast<uint32_t>(eff >> 32);
  hdr.pid = 0;  // this thread only
  syscall(SYS_capset, &hdr, data);
}

std::string Resolve(const Cred& cred, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  std::string out = cred.cwd;
  if (out.empty() || out.back() != '/') out += '/';
  out += path;
  return out;
}

// ---------------------------------------------------------------------------
// Errors

Error OsError(int err, std::string_view syscall, std::string_view path) {
  std::string msg = std::strerror(err);
  msg += " (os error " + std::to_string(err) + "): ";
  msg += syscall;
  msg += " '";
  msg += path;
  msg += "'";
  return Error{err, std::move(msg)};
}

Error OsError2(int err, std::string_view syscall, std::string_view from, std::string_view to) {
  std::string two = std::string(from) + "' -> '" + std::string(to);
  return OsError(err, syscall, two);
}

// ---------------------------------------------------------------------------
// FileInfo

int StatxPath(const std::string& path, bool follow, struct statx* st) {
  int flags = follow ? 0 : AT_SYMLINK_NOFOLLOW;
  return statx(AT_FDCWD, path.c_str(), flags, STATX_BASIC_STATS | STATX_BTIME, st) == 0 ? 0 : errno;
}

int StatxFd(int fd, struct statx* st) {
  return statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_BTIME, st) == 0 ? 0 : errno;
}

json FileInfoJson(const struct statx& st) {
  auto date = [](const statx_timestamp& t) { return IsoDate(t.tv_sec, t.tv_nsec); };
  mode_t m = st.stx_mode;
  const statx_timestamp& birth = (st.stx_mask & STATX_BTIME) ? st.stx_btime : st.stx_ctime;
  return json{
      {"isFile", S_ISREG(m)},
      {"isDirectory", S_ISDIR(m)},
      {"isSymlink", S_ISLNK(m)},
      {"size", st.stx_size},
      {"mtime", date(st.stx_mtime)},
      {"atime", date(st.stx_atime)},
      {"birthtime", date(birth)},
      {"ctime", date(st.stx_ctime)},
      {"mode", m},
      {"dev", makedev(st.stx_dev_major, st.stx_dev_minor)},
      {"ino", st.stx_ino},
      {"nlink", st.stx_nlink},
      {"uid", st.stx_uid},
      {"gid", st.stx_gid},
      {"rdev", makedev(st.stx_rdev_major, st.stx_rdev_minor)},
      {"blksize", st.stx_blksize},
      {"blocks", st.stx_blocks},
      {"isBlockDevice", S_ISBLK(m)},
      {"isCharDevice", S_ISCHR(m)},
      {"isFifo", S_ISFIFO(m)},
      {"isSocket", S_ISSOCK(m)},
  };
}

// ---------------------------------------------------------------------------
// Dates

std::string IsoDate(int64_t sec, int64_t nsec) {
  int64_t ms = sec * 1000 + nsec / 1000000;
  int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
  int64_t rem = ms - days * 86400000;
  int64_t y;
  unsigned mo, d;
  CivilFromDays(days, &y, &mo, &d);
  char buf[64];
  int hh = static_cast<int>(rem / 3600000), mi = static_cast<int>(rem / 60000 % 60);
  int ss = static_cast<int>(rem / 1000 % 60), mss = static_cast<int>(rem % 1000);
  if (y >= 0 && y <= 9999) {
    snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02d:%02d:%02d.%03dZ", static_cast<long long>(y),
             mo, d, hh, mi, ss, mss);
  } else {
    snprintf(buf, sizeof buf, "%c%06lld-%02u-%02uT%02d:%02d:%02d.%03dZ", y < 0 ? '-' : '+',
             static_cast<long long>(y < 0 ? -y : y), mo, d, hh, mi, ss, mss);
  }
  return buf;
}

std::optional<timespec> ParseIsoDate(std::string_view s) {
  size_t i = 0;
  int64_t year, mon, day, hh = 0, mi = 0, ss = 0, nsec = 0;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    bool neg = s[0] == '-';
    i = 1;
    if (!Digits(s, &i, 6, &year)) return std::nullopt;
    if (neg) year = -year;
  } else if (!Digits(s, &i, 4, &year)) {
    return std::nullopt;
  }
  if (i >= s.size() || s[i++] != '-' || !Digits(s, &i, 2, &mon)) return std::nullopt;
  if (i >= s.size() || s[i++] != '-' || !Digits(s, &i, 2, &day)) return std::nullopt;
  if (mon < 1 || mon > 12 || day < 1 || day > 31) return std::nullopt;
  int64_t offset_min = 0;
  if (i < s.size()) {
    if (s[i] != 'T' && s[i] != 't' && s[i] != ' ') return std::nullopt;
    ++i;
    if (!Digits(s, &i, 2, &hh) || i >= s.size() || s[i++] != ':' || !Digits(s, &i, 2, &mi)) {
      return std::nullopt;
    }
    if (i < s.size() && s[i] == ':') {
      ++i;
      if (!Digits(s, &i, 2, &ss)) return std::nullopt;
      if (i < s.size() && (s[i] == '.' || s[i] == ',')) {
        ++i;
        size_t start = i;
        int64_t scale = 100000000;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
          nsec += (s[i] - '0') * scale;
          scale /= 10;
          ++i;
        }
        if (i == start) return std::nullopt;
      }
    }
    if (hh > 24 || mi > 59 || ss > 59 || (hh == 24 && (mi | ss | nsec) != 0)) return std::nullopt;
    if (i < s.size()) {
      if (s[i] == 'Z' || s[i] == 'z') {
        ++i;
      } else if (s[i] == '+' || s[i] == '-') {
        int sign = s[i++] == '-' ? -1 : 1;
        int64_t oh, om;
        if (!Digits(s, &i, 2, &oh)) return std::nullopt;
        if (i < s.size() && s[i] == ':') ++i;
        if (!Digits(s, &i, 2, &om) || oh > 23 || om > 59) return std::nullopt;
        offset_min = sign * (oh * 60 + om);
      }
    }
    if (i != s.size()) return std::nullopt;
  }
  static constexpr int kMonthDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (day > kMonthDays[mon - 1] || (mon == 2 && day == 29 && !leap)) return std::nullopt;
  int64_t days = DaysFromCivil(year, static_cast<unsigned>(mon), static_cast<unsigned>(day));
  timespec ts{};
  ts.tv_sec = days * 86400 + hh * 3600 + mi * 60 + ss - offset_min * 60;
  ts.tv_nsec = nsec;
  return ts;
}

Result<timespec> DateParam(const Params& p, const char* key) {
  const json& v = p.Raw(key);
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() <= 64) {
      if (auto ts = ParseIsoDate(s)) return *ts;
    }
    return Invalid(Key(key) + " is not a valid date");
  }
  if (v.is_number()) {
    double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > 8.64e12) return Invalid(Key(key) + " is out of range");
    timespec ts{};
    double sec = std::floor(d);
    ts.tv_sec = static_cast<time_t>(sec);
    ts.tv_nsec = static_cast<long>((d - sec) * 1e9);
    return ts;
  }
  return Invalid(Key(key) + " must be a date");
}

// ---------------------------------------------------------------------------
// Base64

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(in[k])); };
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = b(i) << 16 | b(i + 1) << 8 | b(i + 2);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (size_t rest = in.size() - i; rest > 0) {
    uint32_t v = b(i) << 16 | (rest == 2 ? b(i + 1) << 8 : 0);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += rest == 2 ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view in) {
  static const auto kTable = [] {
    std::array<int8_t, 256> t;
    t.fill(-1);
    for (int k = 0; k < 64; ++k) t[static_cast<unsigned char>(kB64[k])] = static_cast<int8_t>(k);
    return t;
  }();
  if (in.size() % 4 != 0) return std::nullopt;
  size_t pad = 0;
  if (in.ends_with("=="))
    pad = 2;
  else if (in.ends_with('='))
    pad = 1;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    bool last = i + 4 == in.size();
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) {
      char c = in[i + k];
      int8_t x;
      if (c == '=' && last && k >= 4 - pad) {
        x = 0;
      } else {
        x = kTable[static_cast<unsigned char>(c)];
        if (x < 0) return std::nullopt;
      }
      v = v << 6 | static_cast<uint32_t>(x);
    }
    out += static_cast<char>(v >> 16);
    if (!last || pad < 2) out += static_cast<char>((v >> 8) & 0xff);
    if (!last || pad < 1) out += static_cast<char>(v & 0xff);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Paths

bool IsAbsolute(std::string_view path) { return !path.empty() && path[0] == '/'; }

std::string NormalizePath(std::string_view path) {
  if (path.empty()) return ".";
  bool abs = path[0] == '/';
  bool trailing = path.back() == '/';
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view seg = path.substr(i, j - i);
    i = j + 1;
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else if (!abs) {
        parts.push_back(seg);
      }
      continue;
    }
    parts.push_back(seg);
  }
  std::string out = abs ? "/" : "";
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k > 0) out += '/';
    out += parts[k];
  }
  if (out.empty()) return abs ? "/" : ".";
  if (trailing && out != "/") out += '/';
  return out;
}

std::string JoinPath(std::string_view a, std::string_view b) {
  if (a.empty()) return NormalizePath(b);
  if (b.empty()) return NormalizePath(a);
  std::string s(a);
  s += '/';
  s += b;
  return NormalizePath(s);
}

std::string BaseName(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path == "/") return "";
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

}  // namespace sandboxd::agent::fs
