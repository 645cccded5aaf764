#include "agent/fs_walk.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <utility>
#include <vector>

namespace sandboxd::agent::fs {
namespace {

using nlohmann::json;

// expandGlob collects (and sorts) its matches before streaming them.
constexpr size_t kMaxGlobMatches = 1'000'000;
constexpr int64_t kInfinity = std::numeric_limits<int64_t>::max();

struct Filters {
  std::optional<std::vector<std::string>> exts;
  std::optional<std::vector<std::regex>> match;
  std::optional<std::vector<std::regex>> skip;
};

struct WalkOptions {
  int64_t max_depth = kInfinity;
  bool include_files = true;
  bool include_dirs = true;
  bool include_symlinks = true;
  bool follow_symlinks = false;
  bool canonicalize = true;
  Filters filters;
};

bool Include(const std::string& path, const Filters& f, bool only_skip = false) {
  if (!only_skip) {
    if (f.exts && !std::any_of(f.exts->begin(), f.exts->end(),
                               [&](const std::string& e) { return path.ends_with(e); })) {
      return false;
    }
    if (f.match && !std::any_of(f.match->begin(), f.match->end(),
                                [&](const std::regex& r) { return std::regex_search(path, r); })) {
      return false;
    }
  }
  if (f.skip && std::any_of(f.skip->begin(), f.skip->end(),
                            [&](const std::regex& r) { return std::regex_search(path, r); })) {
    return false;
  }
  return true;
}

Result<std::regex> CompileRegex(const std::string& source, std::string_view flags) {
  auto syntax = std::regex::ECMAScript;
  for (char c : flags) {
    if (c == 'i') syntax |= std::regex::icase;
    if (c == 'm') syntax |= std::regex::multiline;
    // g, y, s, u, v, d: no effect on a yes/no search of one path (s and u/v
    // would, but std::regex has no equivalent; accepted and ignored).
  }
  try {
    return std::regex(source, syntax);
  } catch (const std::regex_error& e) {
    return Invalid("invalid regular expression /" + source.substr(0, 200) + "/: " + e.what());
  }
}

Result<std::optional<std::vector<std::regex>>> RegexList(const Params& p, const char* key) {
  const json& v = p.Raw(key);
  if (v.is_null()) return std::optional<std::vector<std::regex>>();
  if (!v.is_array() || v.size() > kMaxListItems) {
    return Invalid(std::string("'") + key + "' must be an array of RegExp objects");
  }
  std::vector<std::regex> out;
  for (const json& e : v) {
    if (!e.is_object() || !e.contains("source") || !e["source"].is_string() ||
        (e.contains("flags") && !e["flags"].is_string())) {
      return Invalid(std::string("'") + key + "' must be an array of {source, flags}");
    }
    const auto& source = e["source"].get_ref<const std::string&>();
    if (source.size() > 4096)
      return Invalid(std::string("'") + key + "': regular expression too long");
    auto re = CompileRegex(source, e.contains("flags") ? e["flags"].get<std::string>() : "");
    if (!re) return std::unexpected(re.error());
    out.push_back(std::move(*re));
  }
  return std::optional<std::vector<std::regex>>(std::move(out));
}

// @std/fs createWalkEntry(): stat (following symlinks) of a normalised path.
Result<WalkEntry> CreateWalkEntry(const Cred& cred, const std::string& path_in) {
  WalkEntry e;
  e.path = NormalizePath(path_in);
  e.name = BaseName(e.path);
  struct stat st;
  if (stat(Resolve(cred, e.path).c_str(), &st) != 0)
    return std::unexpected(OsError(errno, "stat", e.path));
  e.is_file = S_ISREG(st.st_mode);
  e.is_directory = S_ISDIR(st.st_mode);
  e.is_symlink = S_ISLNK(st.st_mode);
  return e;
}

struct DirItem {
  std::string name;
  unsigned char type;
};

class Walker {
 public:
  Walker(const Cred& cred, const WalkOptions& opts, const EntrySink& sink)
      : cred_(cred), opts_(opts), sink_(sink) {}

  // Status plus "stopped": the sink asked to stop (not an error).
  Status Run(const std::string& root, int64_t max_depth) {
    if (max_depth < 0) return {};
    if (opts_.include_dirs && Include(root, opts_.filters)) {
      auto e = CreateWalkEntry(cred_, root);
      if (!e) return std::unexpected(e.error());
      if (!Emit(*e)) return {};
    }
    if (max_depth < 1 || !Include(root, opts_.filters, /*only_skip=*/true)) return {};

    std::vector<DirItem> items;
    std::pair<dev_t, ino_t> id;
    {
      int fd = UserOpen(Resolve(cred_, root).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) return std::unexpected(OsError(errno, "readdir", NormalizePath(root)));
      if (int err = GuardFd(fd); err != 0) {
        close(fd);
        return std::unexpected(OsError(err, "readdir", NormalizePath(root)));
      }
      struct stat st;
      fstat(fd, &st);
      id = {st.st_dev, st.st_ino};
      DIR* dir = fdopendir(fd);
      if (dir == nullptr) {
        int err = errno;
        close(fd);
        return std::unexpected(OsError(err, "readdir", NormalizePath(root)));
      }
      int err = 0;
      while (true) {
        errno = 0;
        dirent* d = readdir(dir);
        if (d == nullptr) {
          err = errno;
          break;
        }
        if (d->d_name[0] == '.' &&
            (d->d_name[1] == '\0' || (d->d_name[1] == '.' && d->d_name[2] == '\0'))) {
          continue;
        }
        unsigned char t = d->d_type;
        if (t == DT_UNKNOWN) {
          struct stat es;
          if (fstatat(fd, d->d_name, &es, AT_SYMLINK_NOFOLLOW) == 0) {
            t = S_ISDIR(es.st_mode)   ? DT_DIR
                : S_ISLNK(es.st_mode) ? DT_LNK
                : S_ISREG(es.st_mode) ? DT_REG
                                      : DT_UNKNOWN;
          }
        }
        items.push_back({d->d_name, t});
      }
      closedir(dir);
      if (err != 0) return std::unexpected(OsError(err, "readdir", NormalizePath(root)));
    }
    // A directory that is its own ancestor (reached through a symlink) is
    // not walked again: that is what makes symlink loops terminate.
    if (std::find(ancestors_.begin(), ancestors_.end(), id) != ancestors_.end()) return {};
    ancestors_.push_back(id);
    Status result = Children(root, max_depth, items);
    ancestors_.pop_back();
    return result;
  }

  bool stopped() const { return stopped_; }

 private:
  Status Children(const std::string& root, int64_t max_depth, const std::vector<DirItem>& items) {
    for (const DirItem& item : items) {
      if (stopped_) return {};
      std::string path = JoinPath(root, item.name);
      bool is_symlink = item.type == DT_LNK;
      bool is_dir = item.type == DT_DIR;
      if (is_symlink) {
        if (!opts_.follow_symlinks) {
          if (opts_.include_symlinks && Include(path, opts_.filters)) {
            if (!Emit(WalkEntry{path, item.name, false, false, true})) return {};
          }
          continue;
        }
        char* real = realpath(Resolve(cred_, path).c_str(), nullptr);
        if (real == nullptr) return std::unexpected(OsError(errno, "realpath", path));
        std::string real_path(real);
        free(real);
        if (opts_.canonicalize) path = real_path;
        struct stat st;
        if (lstat(real_path.c_str(), &st) != 0)
          return std::unexpected(OsError(errno, "lstat", real_path));
        is_symlink = S_ISLNK(st.st_mode);
        is_dir = S_ISDIR(st.st_mode);
      }
      if (is_symlink || is_dir) {
        if (max_depth == kInfinity) {
          SBX_TRY(Run(path, kInfinity));
        } else {
          SBX_TRY(Run(path, max_depth - 1));
        }
      } else if (opts_.include_files && Include(path, opts_.filters)) {
        // The entry keeps its readDir types: a followed symlink to a file
        // is reported with isSymlink true, as @std/fs does.
        if (!Emit(WalkEntry{path, item.name, item.type == DT_REG, item.type == DT_DIR,
                            item.type == DT_LNK})) {
          return {};
        }
      }
    }
    return {};
  }

  bool Emit(const WalkEntry& e) {
    if (stopped_) return false;
    if (!sink_(e)) stopped_ = true;
    return !stopped_;
  }

  const Cred& cred_;
  const WalkOptions& opts_;
  const EntrySink& sink_;
  std::vector<std::pair<dev_t, ino_t>> ancestors_;
  bool stopped_ = false;
};

Status RunWalk(const Cred& cred, const std::string& root, const WalkOptions& opts,
               const EntrySink& sink) {
  Walker w(cred, opts, sink);
  return w.Run(root, opts.max_depth);
}

std::string ResolvePosix(std::string_view base, std::string_view path) {
  if (IsAbsolute(path)) return NormalizePath(path);
  return JoinPath(base, path);
}

bool IsNotFound(const Error& e) { return e.code == ENOENT; }

}  // namespace

json WalkEntryJson(const WalkEntry& e) {
  return json{{"path", e.path},
              {"name", e.name},
              {"isFile", e.is_file},
              {"isDirectory", e.is_directory},
              {"isSymlink", e.is_symlink}};
}

Status Walk(const json& msg, const Cred& cred, const EntrySink& sink) {
  Params p(msg);
  auto path = p.Path("path");
  if (!path) return std::unexpected(path.error());
  WalkOptions o;
  auto depth = p.OptInt("maxDepth", std::numeric_limits<int64_t>::min(), kInfinity);
  if (!depth) return std::unexpected(depth.error());
  if (*depth) o.max_depth = **depth;
  struct {
    const char* key;
    bool* dst;
  } bools[] = {{"includeFiles", &o.include_files},
               {"includeDirs", &o.include_dirs},
               {"includeSymlinks", &o.include_symlinks},
               {"followSymlinks", &o.follow_symlinks},
               {"canonicalize", &o.canonicalize}};
  for (auto& b : bools) {
    auto v = p.Bool(b.key, *b.dst);
    if (!v) return std::unexpected(v.error());
    *b.dst = *v;
  }
  auto exts = p.OptStrings("exts");
  if (!exts) return std::unexpected(exts.error());
  if (*exts) {
    for (auto& e : **exts) {
      if (!e.starts_with('.')) e = "." + e;
    }
    o.filters.exts = std::move(*exts);
  }
  auto match = RegexList(p, "match");
  if (!match) return std::unexpected(match.error());
  o.filters.match = std::move(*match);
  auto skip = RegexList(p, "skip");
  if (!skip) return std::unexpected(skip.error());
  o.filters.skip = std::move(*skip);
  return RunWalk(cred, *path, o, sink);
}

Status ExpandGlob(const json& msg, const Cred& cred, const EntrySink& sink) {
  Params p(msg);
  auto glob = p.Path("glob");
  if (!glob) return std::unexpected(glob.error());
  auto root = p.OptPath("root");
  if (!root) return std::unexpected(root.error());
  auto exclude = p.OptStrings("exclude");
  if (!exclude) return std::unexpected(exclude.error());
  bool include_dirs = true, extended = true, globstar = true, icase = false, follow = false,
       canon = true;
  struct {
    const char* key;
    bool* dst;
  } bools[] = {{"includeDirs", &include_dirs}, {"extended", &extended},
               {"globstar", &globstar},        {"caseInsensitive", &icase},
               {"followSymlinks", &follow},    {"canonicalize", &canon}};
  for (auto& b : bools) {
    auto v = p.Bool(b.key, *b.dst);
    if (!v) return std::unexpected(v.error());
    *b.dst = *v;
  }

  // split(): segments without leading/trailing separators.
  const std::string& g = *glob;
  bool is_abs = IsAbsolute(g);
  bool trailing_sep = !g.empty() && g.back() == '/';
  std::vector<std::string> segments;
  {
    size_t b = g.find_first_not_of('/');
    size_t e = g.find_last_not_of('/');
    std::string_view body =
        b == std::string::npos ? std::string_view() : std::string_view(g).substr(b, e - b + 1);
    size_t i = 0;
    while (true) {
      size_t j = body.find('/', i);
      segments.emplace_back(
          body.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i));
      if (j == std::string_view::npos) break;
      i = body.find_first_not_of('/', j);
    }
  }

  std::string abs_root = is_abs ? "/" : ResolvePosix(cred.cwd, root->value_or(cred.cwd));
  auto flags = std::regex::ECMAScript | (icase ? std::regex::icase : std::regex::ECMAScript);
  // @std/fs resolves excludes against `root` even for an absolute glob.
  std::string exclude_base = is_abs ? ResolvePosix(cred.cwd, root->value_or("/")) : abs_root;
  std::vector<std::regex> excludes;
  for (const auto& x : exclude->value_or(std::vector<std::string>{})) {
    try {
      excludes.emplace_back(GlobToRegExpSource(ResolvePosix(exclude_base, x), extended, globstar),
                            flags);
    } catch (const std::regex_error& e) {
      return Invalid("invalid exclude glob '" + x + "'");
    }
  }
  auto should_include = [&](const std::string& path) {
    return std::none_of(excludes.begin(), excludes.end(),
                        [&](const std::regex& r) { return std::regex_search(path, r); });
  };

  std::string fixed_root = abs_root;
  size_t first = 0;
  while (first < segments.size() && !IsGlob(segments[first])) {
    fixed_root = JoinPath(fixed_root, segments[first]);
    ++first;
  }
  auto fixed_info = CreateWalkEntry(cred, fixed_root);
  if (!fixed_info) {
    if (IsNotFound(fixed_info.error())) return {};  // a missing fixed prefix matches nothing
    return std::unexpected(fixed_info.error());
  }

  std::vector<WalkEntry> current{*fixed_info};
  for (size_t s = first; s < segments.size(); ++s) {
    const std::string& seg = segments[s];
    std::map<std::string, WalkEntry> next;
    auto add = [&](const WalkEntry& e) {
      if (next.size() >= kMaxGlobMatches && !next.contains(e.path)) return false;
      next[e.path] = e;
      return true;
    };
    std::optional<std::regex> seg_re;
    if (seg != ".." && seg != "**") {
      try {
        seg_re.emplace(GlobToRegExpSource(seg, extended, globstar), flags);
      } catch (const std::regex_error&) {
        return Invalid("invalid glob segment '" + seg + "'");
      }
    }
    for (const WalkEntry& cur : current) {
      if (!cur.is_directory) continue;
      bool full = false;
      if (seg == "..") {
        std::string parent = JoinPath(cur.path, "..");
        if (should_include(parent)) {
          auto e = CreateWalkEntry(cred, parent);
          if (e) {
            full = !add(*e);
          } else if (!IsNotFound(e.error())) {
            return std::unexpected(e.error());
          }
        }
      } else {
        WalkOptions o;
        o.filters.skip = excludes;
        o.follow_symlinks = follow;
        if (seg == "**") {
          o.max_depth = globstar ? kInfinity : 1;
          o.canonicalize = canon;
          SBX_TRY(RunWalk(cred, cur.path, o,
                          [&](const WalkEntry& e) { return (full = !add(e)) == false; }));
        } else {
          o.max_depth = 1;
          SBX_TRY(RunWalk(cred, cur.path, o, [&](const WalkEntry& e) {
            if (e.path != cur.path && std::regex_search(e.name, *seg_re)) full = !add(e);
            return !full;
          }));
        }
      }
      if (full) return std::unexpected(Error{E2BIG, "expandGlob '" + g + "': too many matches"});
    }
    current.clear();
    for (auto& [path, e] : next) current.push_back(std::move(e));  // std::map: sorted by path
  }
  for (const WalkEntry& e : current) {
    if (trailing_sep && !e.is_directory) continue;
    if (!include_dirs && e.is_directory) continue;
    if (!sink(e)) return {};
  }
  return {};
}

// ---------------------------------------------------------------------------
// Port of @std/path/posix globToRegExp (_common/glob_to_reg_exp.ts).

std::string GlobToRegExpSource(std::string_view glob, bool extended, bool globstar_option) {
  static constexpr std::string_view kRegExpEscape = "!$()*+.=?[\\^{|";
  static constexpr std::string_view kRangeEscape = "-\\]";
  static constexpr std::string_view kSep = "/+";
  static constexpr std::string_view kSepMaybe = "/*";
  static constexpr std::string_view kGlobstar = "(?:[^/]*(?:/|$)+)*";
  static constexpr std::string_view kWildcard = "[^/]*";
  auto escape_into = [](std::string& out, char ch, std::string_view set) {
    if (set.find(ch) != std::string_view::npos) out += '\\';
    out += ch;
  };
  if (glob.empty()) return "(?!)";
  size_t new_len = glob.size();
  while (new_len > 1 && glob[new_len - 1] == '/') --new_len;
  glob = glob.substr(0, new_len);
  auto at = [&](size_t k) -> int { return k < glob.size() ? glob[k] : -1; };

  std::string re;
  for (size_t j = 0; j < glob.size();) {
    std::string segment;
    std::vector<char> groups;  // 'B' for a brace, else the extglob type
    bool in_range = false, in_escape = false, ends_with_sep = false;
    size_t i = j;
    // A separator inside a group belongs to the group.
    for (; i < glob.size() && !(glob[i] == '/' && groups.empty()); ++i) {
      char c = glob[i];
      if (in_escape) {
        in_escape = false;
        escape_into(segment, c, in_range ? kRangeEscape : kRegExpEscape);
        continue;
      }
      if (c == '\\') {
        in_escape = true;
        continue;
      }
      if (c == '[') {
        if (!in_range) {
          in_range = true;
          segment += '[';
          if (at(i + 1) == '!') {
            ++i;
            segment += '^';
          } else if (at(i + 1) == '^') {
            ++i;
            segment += "\\^";
          }
          continue;
        } else if (at(i + 1) == ':') {
          size_t k = i + 1;
          std::string value;
          while (at(k + 1) != -1 && at(k + 1) != ':') {
            value += glob[k + 1];
            ++k;
          }
          if (at(k + 1) == ':' && at(k + 2) == ']') {
            i = k + 2;
            static const std::map<std::string, std::string> kClasses = {
                {"alnum", "\\dA-Za-z"},
                {"alpha", "A-Za-z"},
                {"ascii", "\\x00-\\x7F"},
                {"blank", "\\t "},
                {"cntrl", "\\x00-\\x1F\\x7F"},
                {"digit", "\\d"},
                {"graph", "\\x21-\\x7E"},
                {"lower", "a-z"},
                {"print", "\\x20-\\x7E"},
                {"punct", "!\"#$%&'()*+,\\-./:;<=>?@[\\\\\\]^_`{|}~"},
                {"space", "\\s\\v"},
                {"upper", "A-Z"},
                {"word", "\\w"},
                {"xdigit", "\\dA-Fa-f"}};
            if (auto it = kClasses.find(value); it != kClasses.end()) segment += it->second;
            continue;
          }
        }
      }
      if (c == ']' && in_range) {
        in_range = false;
        segment += ']';
        continue;
      }
      if (in_range) {
        segment += c;
        continue;
      }
      if (c == ')' && !groups.empty() && groups.back() != 'B') {
        segment += ')';
        char type = groups.back();
        groups.pop_back();
        if (type == '!') {
          segment += kWildcard;
        } else if (type != '@') {
          segment += type;
        }
        continue;
      }
      if (c == '|' && !groups.empty() && groups.back() != 'B') {
        segment += '|';
        continue;
      }
      if ((c == '+' || c == '@') && extended && at(i + 1) == '(') {
        ++i;
        groups.push_back(c);
        segment += "(?:";
        continue;
      }
      if (c == '?') {
        if (extended && at(i + 1) == '(') {
          ++i;
          groups.push_back('?');
          segment += "(?:";
        } else {
          segment += '.';
        }
        continue;
      }
      if (c == '!' && extended && at(i + 1) == '(') {
        ++i;
        groups.push_back('!');
        segment += "(?!";
        continue;
      }
      if (c == '{') {
        groups.push_back('B');
        segment += "(?:";
        continue;
      }
      if (c == '}' && !groups.empty() && groups.back() == 'B') {
        groups.pop_back();
        segment += ')';
        continue;
      }
      if (c == ',' && !groups.empty() && groups.back() == 'B') {
        segment += '|';
        continue;
      }
      if (c == '*') {
        if (extended && at(i + 1) == '(') {
          ++i;
          groups.push_back('*');
          segment += "(?:";
        } else {
          int prev = i > 0 ? glob[i - 1] : -1;
          int stars = 1;
          while (at(i + 1) == '*') {
            ++i;
            ++stars;
          }
          int next = at(i + 1);
          if (globstar_option && stars == 2 && (prev == '/' || prev == -1) &&
              (next == '/' || next == -1)) {
            segment += kGlobstar;
            ends_with_sep = true;
          } else {
            segment += kWildcard;
          }
        }
        continue;
      }
      escape_into(segment, c, kRegExpEscape);
    }
    if (!groups.empty() || in_range || in_escape) {
      // Parse failure: the segment is taken literally.
      segment.clear();
      for (char c : glob.substr(j, i - j)) escape_into(segment, c, kRegExpEscape);
      ends_with_sep = false;
    }
    re += segment;
    if (!ends_with_sep) {
      re += i < glob.size() ? kSep : kSepMaybe;
      ends_with_sep = true;
    }
    while (i < glob.size() && glob[i] == '/') ++i;
    j = i;
  }
  return "^" + re + "$";
}

bool IsGlob(std::string_view s_in) {
  static const std::regex kRe(
      R"(\\(.)|(^!|\*|\?|[\].+)]\?|\[[^\\\]]+\]|\{[^\\}]+\}|\(\?[:!=][^\\)]+\)|\([^|]+\|[^\\)]+\)))",
      std::regex::ECMAScript);
  std::string s(s_in);
  if (s.empty()) return false;
  std::smatch m;
  while (std::regex_search(s, m, kRe)) {
    if (m[2].matched) return true;
    size_t idx = static_cast<size_t>(m.position(0) + m.length(0));
    if (m[1].matched) {
      char open = m[1].str()[0];
      char close = open == '{' ? '}' : open == '(' ? ')' : open == '[' ? ']' : 0;
      if (close != 0) {
        size_t n = s.find(close, idx);
        if (n != std::string::npos) idx = n + 1;
      }
    }
    s = s.substr(std::min(idx, s.size()));
  }
  return false;
}

}  // namespace sandboxd::agent::fs
