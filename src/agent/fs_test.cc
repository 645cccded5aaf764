// Black-box tests of the agent's filesystem ops (docs/agent-link.md,
// "Filesystem ops"): the real binary, driven over the link. Run as root;
// the tests that act as uid 1000 check that the agent really drops root's
// privileges for them.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agent/test_link_client.h"

namespace sandboxd::agent {
namespace {

using link::FrameType;
using nlohmann::json;
using testing::AgentUnderTest;
using testing::Ms;
namespace stdfs = std::filesystem;

constexpr uint32_t kUser = 1000;

int ErrnoOf(const json& resp) {
  if (!resp.is_object() || !resp.contains("err")) return 0;
  return resp["err"].value("errno", 0);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x);
  }
  return s;
}

class FsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (acts as other users)";
    char tmpl[] = "/tmp/agent-fs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    chmod(dir_.c_str(), 0755);  // uid 1000 may look, not touch
    agent_ = AgentUnderTest::Start(SANDBOX_AGENT_PATH);
    ASSERT_NE(agent_, nullptr);
    ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->ready; }));
  }
  void TearDown() override {
    if (agent_) {
      EXPECT_EQ(agent_->violation, "");
    }
    agent_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      stdfs::remove_all(dir_, ec);
    }
  }

  std::string P(const std::string& rel) const { return dir_ + "/" + rel; }

  json With(json req, uint32_t uid) const {
    req["uid"] = uid;
    req["gid"] = uid;
    if (!req.contains("cwd")) req["cwd"] = dir_;
    return req;
  }
  json Op(json req, uint32_t uid = 0) { return agent_->Call(With(std::move(req), uid)); }
  // The `ok` value, failing the test on an error reply.
  json Ok(json req, uint32_t uid = 0) {
    json r = Op(req, uid);
    EXPECT_TRUE(r.contains("ok")) << req.dump() << " -> " << r.dump();
    return r.contains("ok") ? r["ok"] : json();
  }

  // readFile through a channel: the reply, and the bytes in `data`.
  json ReadFile(const std::string& path, std::string* data, int64_t max_bytes = 1 << 30,
                uint32_t uid = 0) {
    uint32_t ch = next_channel_++;
    auto& out = agent_->Out(ch);
    out.sink = [data](std::string_view b) { data->append(b); };
    uint64_t id = agent_->Request(
        With({{"op", "readFile"}, {"path", path}, {"channel", ch}, {"maxBytes", max_bytes}}, uid));
    auto r = agent_->Await(id, Ms(60000));
    return r ? *r : json();
  }

  // writeFile through a channel.
  json WriteFile(const std::string& path, std::string_view data, json options = json::object(),
                 uint32_t uid = 0) {
    uint32_t ch = next_channel_++;
    uint64_t id = agent_->Request(
        With({{"op", "writeFile"}, {"path", path}, {"channel", ch}, {"options", options}}, uid));
    if (agent_->SendInput(ch, data, Ms(60000))) agent_->Send(FrameType::kEof, ch, "");
    auto r = agent_->Await(id, Ms(60000));
    return r ? *r : json();
  }

  // walk / expandGlob: the entries, and the reply in `reply`.
  std::vector<json> Stream(json req, json* reply = nullptr) {
    uint32_t ch = next_channel_++;
    req["channel"] = ch;
    uint64_t id = agent_->Request(With(std::move(req), 0));
    auto r = agent_->Await(id, Ms(20000));
    if (reply) *reply = r ? *r : json();
    std::vector<json> out;
    if (!r) return out;
    EXPECT_TRUE(agent_->Out(ch).eof);  // EOF precedes the reply
    std::istringstream lines(agent_->Out(ch).data);
    std::string line;
    while (std::getline(lines, line)) out.push_back(json::parse(line));
    return out;
  }
  std::vector<std::string> Paths(const std::vector<json>& entries) {
    std::vector<std::string> out;
    for (const auto& e : entries) out.push_back(e["path"]);
    return out;
  }

  std::string dir_;
  std::unique_ptr<AgentUnderTest> agent_;
  uint32_t next_channel_ = 100;
};

// ---------------------------------------------------------------------------
// Path ops

TEST_F(FsTest, StatReturnsAllFileInfoKeys) {
  WriteAll(P("f"), "hello");
  symlink("f", P("l").c_str());
  json info = Ok({{"op", "stat"}, {"path", P("l")}});
  const std::regex iso(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  for (const char* k :
       {"isFile",       "isDirectory", "isSymlink", "size",    "mtime",  "atime",
        "birthtime",    "ctime",       "mode",      "dev",     "ino",    "nlink",
        "uid",          "gid",         "rdev",      "blksize", "blocks", "isBlockDevice",
        "isCharDevice", "isFifo",      "isSocket"}) {
    EXPECT_TRUE(info.contains(k)) << k;
  }
  EXPECT_EQ(info.size(), 21u);
  for (const char* k : {"mtime", "atime", "birthtime", "ctime"}) {
    EXPECT_TRUE(std::regex_match(info[k].get<std::string>(), iso)) << info[k];
  }
  EXPECT_EQ(info["isFile"], true);
  EXPECT_EQ(info["size"], 5);
  struct stat st;
  ASSERT_EQ(stat(P("f").c_str(), &st), 0);
  EXPECT_EQ(info["mode"], st.st_mode);
  EXPECT_EQ(info["ino"], st.st_ino);
  json linfo = Ok({{"op", "lstat"}, {"path", P("l")}});
  EXPECT_EQ(linfo["isSymlink"], true);
  EXPECT_EQ(linfo["isFile"], false);
  EXPECT_EQ(Ok({{"op", "stat"}, {"path", dir_}})["isDirectory"], true);

  json r = Op({{"op", "stat"}, {"path", P("nope")}});
  EXPECT_EQ(ErrnoOf(r), ENOENT);
  EXPECT_EQ(r["err"]["message"],
            "No such file or directory (os error 2): stat '" + P("nope") + "'");
}

TEST_F(FsTest, MkdirSemantics) {
  EXPECT_EQ(Ok({{"op", "mkdir"}, {"path", P("d")}}), nullptr);
  EXPECT_EQ(ErrnoOf(Op({{"op", "mkdir"}, {"path", P("d")}})), EEXIST);
  EXPECT_EQ(ErrnoOf(Op({{"op", "mkdir"}, {"path", P("x/y")}})), ENOENT);
  Ok({{"op", "mkdir"}, {"path", P("x/y/z")}, {"options", {{"recursive", true}, {"mode", 0700}}}});
  Ok({{"op", "mkdir"}, {"path", P("x/y/z")}, {"options", {{"recursive", true}}}});  // exists: fine
  struct stat st;
  ASSERT_EQ(stat(P("x/y/z").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  WriteAll(P("file"), "");
  EXPECT_EQ(ErrnoOf(Op({{"op", "mkdir"}, {"path", P("file/sub")}})), ENOTDIR);
  EXPECT_EQ(ErrnoOf(Op({{"op", "mkdir"}, {"path", P("file")}, {"options", {{"recursive", true}}}})),
            EEXIST);
}

TEST_F(FsTest, ReadDirListsEntriesWithTypes) {
  mkdir(P("sub").c_str(), 0755);
  WriteAll(P("a.txt"), "a");
  symlink("a.txt", P("link").c_str());
  json list = Ok({{"op", "readDir"}, {"path", dir_}});
  ASSERT_TRUE(list.is_array());
  std::map<std::string, json> by_name;
  for (auto& e : list) by_name[e["name"]] = e;
  ASSERT_EQ(by_name.size(), 3u);
  EXPECT_EQ(
      by_name["sub"],
      (json{{"name", "sub"}, {"isFile", false}, {"isDirectory", true}, {"isSymlink", false}}));
  EXPECT_EQ(by_name["a.txt"]["isFile"], true);
  EXPECT_EQ(by_name["link"]["isSymlink"], true);
  EXPECT_EQ(ErrnoOf(Op({{"op", "readDir"}, {"path", P("none")}})), ENOENT);
  EXPECT_EQ(ErrnoOf(Op({{"op", "readDir"}, {"path", P("a.txt")}})), ENOTDIR);
}

TEST_F(FsTest, RemoveSemantics) {
  mkdir(P("d").c_str(), 0755);
  mkdir(P("d/e").c_str(), 0755);
  WriteAll(P("d/e/f"), "x");
  mkdir(P("keep").c_str(), 0755);
  WriteAll(P("keep/precious"), "x");
  symlink(P("keep").c_str(), P("d/to-keep").c_str());
  EXPECT_EQ(ErrnoOf(Op({{"op", "remove"}, {"path", P("d")}})), ENOTEMPTY);
  Ok({{"op", "remove"}, {"path", P("d")}, {"options", {{"recursive", true}}}});
  EXPECT_FALSE(stdfs::exists(P("d")));
  EXPECT_TRUE(stdfs::exists(P("keep/precious")));  // the symlink was not followed
  Ok({{"op", "remove"}, {"path", P("keep/precious")}});
  Ok({{"op", "remove"}, {"path", P("keep")}});
  EXPECT_EQ(ErrnoOf(Op({{"op", "remove"}, {"path", P("keep")}})), ENOENT);
  EXPECT_EQ(
      ErrnoOf(Op({{"op", "remove"}, {"path", P("keep")}, {"options", {{"recursive", true}}}})),
      ENOENT);
}

TEST_F(FsTest, RenameCopyLinksAndPaths) {
  WriteAll(P("a"), "content");
  Ok({{"op", "rename"}, {"oldPath", P("a")}, {"newPath", P("b")}});
  EXPECT_EQ(ReadAll(P("b")), "content");
  json r = Op({{"op", "rename"}, {"oldPath", P("a")}, {"newPath", P("c")}});
  EXPECT_EQ(ErrnoOf(r), ENOENT);
  EXPECT_EQ(r["err"]["message"],
            "No such file or directory (os error 2): rename '" + P("a") + "' -> '" + P("c") + "'");

  chmod(P("b").c_str(), 0640);
  Ok({{"op", "copyFile"}, {"fromPath", P("b")}, {"toPath", P("c")}});
  EXPECT_EQ(ReadAll(P("c")), "content");
  struct stat st;
  stat(P("c").c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(ErrnoOf(Op({{"op", "copyFile"}, {"fromPath", P("zz")}, {"toPath", P("c")}})), ENOENT);

  Ok({{"op", "link"}, {"target", P("b")}, {"path", P("hard")}});
  EXPECT_EQ(Ok({{"op", "stat"}, {"path", P("b")}})["nlink"], 2);
  EXPECT_EQ(ErrnoOf(Op({{"op", "link"}, {"target", P("b")}, {"path", P("hard")}})), EEXIST);

  Ok({{"op", "symlink"}, {"target", "b"}, {"path", P("sym")}, {"options", {{"type", "file"}}}});
  EXPECT_EQ(Ok({{"op", "readLink"}, {"path", P("sym")}}), "b");  // verbatim, relative
  EXPECT_EQ(Ok({{"op", "realPath"}, {"path", P("sym")}}), stdfs::canonical(P("b")).string());
  EXPECT_EQ(ErrnoOf(Op({{"op", "symlink"}, {"target", "b"}, {"path", P("sym")}})), EEXIST);
  EXPECT_EQ(ErrnoOf(Op({{"op", "readLink"}, {"path", P("b")}})), EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "realPath"}, {"path", P("nowhere")}})), ENOENT);
}

TEST_F(FsTest, ChmodChownTruncateUtime) {
  WriteAll(P("f"), "0123456789");
  Ok({{"op", "chmod"}, {"path", P("f")}, {"mode", 0600}});
  EXPECT_EQ(Ok({{"op", "stat"}, {"path", P("f")}})["mode"], S_IFREG | 0600);
  EXPECT_EQ(ErrnoOf(Op({{"op", "chmod"}, {"path", P("nf")}, {"mode", 0600}})), ENOENT);

  Ok({{"op", "chown"}, {"path", P("f")}, {"owner", kUser}, {"group", nullptr}});
  json info = Ok({{"op", "stat"}, {"path", P("f")}});
  EXPECT_EQ(info["uid"], kUser);
  EXPECT_EQ(info["gid"], 0);
  EXPECT_EQ(ErrnoOf(Op({{"op", "chown"}, {"path", P("f")}})), EINVAL);  // target ids required

  Ok({{"op", "truncate"}, {"name", P("f")}, {"length", 4}});
  EXPECT_EQ(ReadAll(P("f")), "0123");
  Ok({{"op", "truncate"}, {"name", P("f")}});
  EXPECT_EQ(ReadAll(P("f")), "");
  EXPECT_EQ(ErrnoOf(Op({{"op", "truncate"}, {"name", P("nf")}})), ENOENT);
  EXPECT_EQ(ErrnoOf(Op({{"op", "truncate"}, {"path", P("f")}})), EINVAL);  // the key is `name`

  Ok({{"op", "utime"},
      {"path", P("f")},
      {"atime", "2020-02-03T04:05:06.789Z"},
      {"mtime", "2021-01-01T00:00:00.000Z"}});
  info = Ok({{"op", "stat"}, {"path", P("f")}});
  EXPECT_EQ(info["atime"], "2020-02-03T04:05:06.789Z");
  EXPECT_EQ(info["mtime"], "2021-01-01T00:00:00.000Z");
  EXPECT_EQ(ErrnoOf(Op({{"op", "utime"}, {"path", P("f")}, {"atime", "yesterday"}, {"mtime", 0}})),
            EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "utime"}, {"path", P("nf")}, {"atime", 0}, {"mtime", 0}})), ENOENT);
}

TEST_F(FsTest, UmaskReturnsPreviousValue) {
  int original = Ok({{"op", "umask"}}).get<int>();
  EXPECT_EQ(Ok({{"op", "umask"}, {"mask", 077}}), original);
  EXPECT_EQ(Ok({{"op", "umask"}}), 077);
  Ok({{"op", "mkdir"}, {"path", P("private")}});
  struct stat st;
  stat(P("private").c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(Ok({{"op", "umask"}, {"mask", original}}), 077);
  EXPECT_EQ(ErrnoOf(Op({{"op", "umask"}, {"mask", "022"}})), EINVAL);
}

TEST_F(FsTest, MakeTempDirAndFile) {
  std::string d =
      Ok({{"op", "makeTempDir"}, {"options", {{"prefix", "pre-"}, {"suffix", "-suf"}}}});
  EXPECT_TRUE(d.starts_with("/tmp/pre-")) << d;
  EXPECT_TRUE(d.ends_with("-suf")) << d;
  EXPECT_TRUE(stdfs::is_directory(d));
  struct stat st;
  stat(d.c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  stdfs::remove(d);
  std::string f = Ok({{"op", "makeTempFile"}, {"options", {{"dir", dir_}}}});
  EXPECT_TRUE(f.starts_with(dir_ + "/")) << f;
  EXPECT_TRUE(stdfs::is_regular_file(f));
  std::string g = Ok({{"op", "makeTempFile"}});
  EXPECT_TRUE(g.starts_with("/tmp/"));
  stdfs::remove(g);
  EXPECT_EQ(ErrnoOf(Op({{"op", "makeTempFile"}, {"options", {{"dir", P("none")}}}})), ENOENT);
}

TEST_F(FsTest, RelativePathsResolveAgainstCwd) {
  Ok({{"op", "mkdir"}, {"path", "rel"}});
  EXPECT_TRUE(stdfs::is_directory(P("rel")));
  EXPECT_EQ(WriteFile("rel/file.txt", "relative")["ok"], nullptr);
  EXPECT_EQ(ReadAll(P("rel/file.txt")), "relative");
  Ok({{"op", "stat"}, {"path", "file.txt"}, {"cwd", P("rel")}});
  std::string data;
  EXPECT_EQ(ReadFile("rel/file.txt", &data)["ok"]["size"], 8);
  EXPECT_EQ(data, "relative");
  json r = Op({{"op", "stat"}, {"path", "missing"}});
  EXPECT_EQ(r["err"]["message"], "No such file or directory (os error 2): stat 'missing'");
}

TEST_F(FsTest, UnprivilegedUserCannotModifyRootFiles) {
  WriteAll(P("root-file"), "root's");
  chmod(P("root-file").c_str(), 0644);
  // Reading is allowed by the mode ...
  std::string data;
  EXPECT_EQ(ReadFile(P("root-file"), &data, 1 << 20, kUser)["ok"]["size"], 6);
  // ... writing is not, although the agent itself is root.
  EXPECT_EQ(ErrnoOf(WriteFile(P("root-file"), "mine", json::object(), kUser)), EACCES);
  EXPECT_EQ(ErrnoOf(Op({{"op", "open"}, {"path", P("root-file")}, {"options", {{"write", true}}}},
                       kUser)),
            EACCES);
  EXPECT_EQ(ErrnoOf(Op({{"op", "truncate"}, {"name", P("root-file")}}, kUser)), EACCES);
  EXPECT_EQ(ErrnoOf(Op({{"op", "chmod"}, {"path", P("root-file")}, {"mode", 0777}}, kUser)), EPERM);
  EXPECT_EQ(
      ErrnoOf(Op({{"op", "chown"}, {"path", P("root-file")}, {"owner", kUser}, {"group", kUser}},
                 kUser)),
      EPERM);
  EXPECT_EQ(ErrnoOf(Op({{"op", "remove"}, {"path", P("root-file")}}, kUser)), EACCES);
  EXPECT_EQ(ErrnoOf(Op({{"op", "mkdir"}, {"path", P("mine")}}, kUser)), EACCES);
  EXPECT_EQ(ReadAll(P("root-file")), "root's");
  chmod(P("root-file").c_str(), 0600);
  EXPECT_EQ(ErrnoOf(ReadFile(P("root-file"), &data, 1 << 20, kUser)), EACCES);

  // In a directory the user may write to, what they create is theirs, and
  // root's ops right after still act as root (the thread's fsuid is reset).
  mkdir(P("shared").c_str(), 0777);
  chmod(P("shared").c_str(), 0777);
  EXPECT_EQ(WriteFile(P("shared/theirs"), "x", json::object(), kUser)["ok"], nullptr);
  Ok({{"op", "mkdir"}, {"path", P("shared/dir")}}, kUser);
  EXPECT_EQ(Ok({{"op", "stat"}, {"path", P("shared/theirs")}})["uid"], kUser);
  EXPECT_EQ(Ok({{"op", "stat"}, {"path", P("shared/dir")}})["gid"], kUser);
  for (int i = 0; i < 8; ++i) {  // every pool thread
    EXPECT_EQ(Ok({{"op", "chmod"}, {"path", P("root-file")}, {"mode", 0600}}), nullptr);
  }
}

TEST_F(FsTest, AgentsOwnProcEntriesAreOffLimits) {
  // The agent serves fs ops from threads of its own thread group, for which
  // the kernel waives /proc's ptrace checks; the agent must refuse itself.
  std::string self = "/proc/" + std::to_string(agent_->pid());
  std::vector<std::string> tids;
  for (const auto& e : stdfs::directory_iterator(self + "/task"))
    tids.push_back(e.path().filename());
  ASSERT_GT(tids.size(), 1u);  // the loop and its workers
  symlink((self + "/environ").c_str(), P("sneaky").c_str());
  for (uint32_t uid : {kUser, 0u}) {
    std::string data;
    for (const std::string& p :
         {self + "/environ", self + "/maps", std::string("/proc/self/environ"),
          std::string("/proc/thread-self/environ"), "/proc/" + tids.back() + "/environ",
          self + "/task/" + tids.back() + "/maps", P("sneaky")}) {
      EXPECT_EQ(ErrnoOf(ReadFile(p, &data, 1 << 20, uid)), EACCES) << p << " as " << uid;
      EXPECT_EQ(ErrnoOf(Op({{"op", "copyFile"}, {"fromPath", p}, {"toPath", P("copy")}}, uid)),
                EACCES)
          << p;
    }
    EXPECT_EQ(data, "");
    EXPECT_EQ(ErrnoOf(Op({{"op", "open"},
                          {"path", self + "/mem"},
                          {"options", {{"read", true}, {"write", true}}}},
                         uid)),
              EACCES);
    EXPECT_EQ(ErrnoOf(WriteFile(self + "/mem", "x", {{"create", false}}, uid)), EACCES);
    EXPECT_EQ(ErrnoOf(Op({{"op", "readDir"}, {"path", self + "/fd"}}, uid)), EACCES);
    EXPECT_EQ(ErrnoOf(Op({{"op", "readLink"}, {"path", self + "/fd/0"}}, uid)), EACCES);
    // Magic links are not followed at all (ELOOP), ours or not.
    EXPECT_EQ(ErrnoOf(Op({{"op", "realPath"}, {"path", self + "/cwd"}}, uid)), ELOOP);
    EXPECT_EQ(ErrnoOf(Op({{"op", "stat"}, {"path", "/proc/self/exe"}}, uid)), ELOOP);
    EXPECT_EQ(ErrnoOf(Op({{"op", "readDir"}, {"path", self + "/root/tmp"}}, uid)), ELOOP);
    EXPECT_EQ(ErrnoOf(Op({{"op", "lstat"}, {"path", "/proc/self"}}, uid)), 0);  // a plain symlink
    json reply;
    Stream({{"op", "walk"}, {"path", self + "/fd"}}, &reply);
    EXPECT_EQ(ErrnoOf(reply), EACCES);
  }
  // The rest of /proc stays readable.
  std::string version;
  EXPECT_TRUE(ReadFile("/proc/version", &version, 1 << 20, kUser).contains("ok"));
  EXPECT_TRUE(version.starts_with("Linux")) << version;
  EXPECT_TRUE(Op({{"op", "readDir"}, {"path", "/proc"}}, kUser).contains("ok"));
}

TEST_F(FsTest, RejectsMalformedParams) {
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "stat"}, {"path", "/"}})), EINVAL);  // no uid/gid/cwd
  EXPECT_EQ(ErrnoOf(agent_->Call(
                {{"op", "stat"}, {"path", "/"}, {"uid", 0}, {"gid", 0}, {"cwd", "rel"}})),
            EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "stat"}, {"path", 5}})), EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "stat"}, {"path", std::string("/tmp\0/x", 7)}})), EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "mkdir"}, {"path", P("m")}, {"options", {{"recursive", "yes"}}}})),
            EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "mkdir"}, {"path", P("m")}, {"options", 7}})), EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "chmod"}, {"path", P("m")}, {"mode", -1}})), EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "readFile"}, {"path", P("m")}, {"channel", "x"}})), EINVAL);
  EXPECT_EQ(
      ErrnoOf(Op({{"op", "walk"}, {"path", dir_}, {"channel", 7}, {"match", {{{"source", "("}}}}})),
      EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "fileRead"}, {"fileHandleId", 12345}, {"length", 1}})), EBADF);
  EXPECT_EQ(ErrnoOf(Op({{"op", "stat"}, {"path", std::string(5000, 'a')}})), EINVAL);
  EXPECT_TRUE(agent_->Call({{"op", "ping"}}).contains("ok"));
}

// ---------------------------------------------------------------------------
// readFile / writeFile over channels

TEST_F(FsTest, ReadAndWriteFileThroughChannels) {
  // Zero bytes both ways.
  EXPECT_EQ(WriteFile(P("empty"), "")["ok"], nullptr);
  EXPECT_TRUE(stdfs::exists(P("empty")));
  std::string data = "junk";
  data.clear();
  json r = ReadFile(P("empty"), &data);
  EXPECT_EQ(r["ok"], (json{{"size", 0}}));
  EXPECT_EQ(data, "");

  // 20 MB, byte for byte, both directions (several windows' worth).
  std::string big = Pattern(20'000'000, 7);
  EXPECT_EQ(WriteFile(P("big"), big)["ok"], nullptr);
  EXPECT_TRUE(ReadAll(P("big")) == big);
  std::string back;
  r = ReadFile(P("big"), &back);
  EXPECT_EQ(r["ok"]["size"], big.size());
  EXPECT_TRUE(back == big) << back.size();

  // maxBytes: EFBIG before any data.
  data.clear();
  r = ReadFile(P("big"), &data, 1000);
  EXPECT_EQ(ErrnoOf(r), EFBIG);
  EXPECT_EQ(data, "");
  EXPECT_EQ(ErrnoOf(ReadFile(P("none"), &data)), ENOENT);
  EXPECT_EQ(ErrnoOf(ReadFile(dir_, &data)), EISDIR);
}

TEST_F(FsTest, WriteFileOptions) {
  EXPECT_EQ(WriteFile(P("f"), "one")["ok"], nullptr);
  EXPECT_EQ(WriteFile(P("f"), "two", {{"append", true}})["ok"], nullptr);
  EXPECT_EQ(ReadAll(P("f")), "onetwo");
  EXPECT_EQ(WriteFile(P("f"), "3")["ok"], nullptr);  // truncates
  EXPECT_EQ(ReadAll(P("f")), "3");
  uint32_t ch = next_channel_;
  json r = WriteFile(P("f"), "new", {{"createNew", true}});
  EXPECT_EQ(ErrnoOf(r), EEXIST);
  EXPECT_TRUE(agent_->WaitUntil([&] { return agent_->resets.contains(ch); }));  // error + RESET
  EXPECT_EQ(ReadAll(P("f")), "3");
  EXPECT_EQ(ErrnoOf(WriteFile(P("g"), "x", {{"create", false}})), ENOENT);
  EXPECT_FALSE(stdfs::exists(P("g")));
  EXPECT_EQ(WriteFile(P("g"), "x", {{"createNew", true}, {"mode", 0640}})["ok"], nullptr);
  struct stat st;
  stat(P("g").c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(ErrnoOf(WriteFile(P("nodir/x"), "x")), ENOENT);
  EXPECT_EQ(ErrnoOf(WriteFile(dir_, "x")), EISDIR);

  // The daemon abandons a transfer: one ECANCELED reply, no RESET back.
  ch = next_channel_++;
  uint64_t id =
      agent_->Request(With({{"op", "writeFile"}, {"path", P("partial")}, {"channel", ch}}, 0));
  ASSERT_TRUE(agent_->SendInput(ch, "some bytes"));
  ASSERT_TRUE(agent_->Send(FrameType::kReset, ch, ""));
  auto resp = agent_->Await(id);
  ASSERT_TRUE(resp);
  EXPECT_EQ(ErrnoOf(*resp), ECANCELED);
  agent_->PumpFor(Ms(50));
  EXPECT_FALSE(agent_->resets.contains(ch));
}

TEST_F(FsTest, ReadFileRespectsCredit) {
  std::string big = Pattern(3 << 20, 1);
  WriteAll(P("f"), big);
  uint32_t ch = next_channel_++;
  agent_->Out(ch).auto_window = false;
  uint64_t id = agent_->Request(
      With({{"op", "readFile"}, {"path", P("f")}, {"channel", ch}, {"maxBytes", 1 << 30}}, 0));
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(ch).bytes >= link::kInitialWindow; }));
  agent_->PumpFor(Ms(200));
  EXPECT_EQ(agent_->Out(ch).bytes, link::kInitialWindow);  // (the client flags any excess)
  // Other ops proceed meanwhile.
  EXPECT_TRUE(Op({{"op", "stat"}, {"path", P("f")}}).contains("ok"));
  agent_->Out(ch).auto_window = true;
  agent_->Grant(ch, link::kInitialWindow);
  auto r = agent_->Await(id, Ms(20000));
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["ok"]["size"], big.size());
  EXPECT_EQ(agent_->Out(ch).bytes, big.size());
  // RESET mid-transfer: the request still gets exactly one (error) reply.
  ch = next_channel_++;
  agent_->Out(ch).auto_window = false;
  id = agent_->Request(With({{"op", "readFile"}, {"path", P("f")}, {"channel", ch}}, 0));
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(ch).bytes > 0; }));
  agent_->Send(FrameType::kReset, ch, "");
  r = agent_->Await(id);
  ASSERT_TRUE(r);
  EXPECT_EQ(ErrnoOf(*r), ECANCELED);
}

TEST_F(FsTest, ReadFileBoundsMemoryWhenTheDaemonDoesNotRead) {
  constexpr size_t kSize = 40u << 20;
  WriteAll(P("f"), Pattern(kSize, 5));
  uint32_t ch = next_channel_++;
  size_t received = 0;
  agent_->Out(ch).sink = [&](std::string_view b) { received += b.size(); };
  agent_->Out(ch).auto_window = false;
  uint64_t id = agent_->Request(With({{"op", "readFile"}, {"path", P("f")}, {"channel", ch}}, 0));
  agent_->Grant(ch, 128u << 20);  // plenty of credit, then the daemon stops reading
  long max_anon_kb = 0;
  for (int i = 0; i < 50; ++i) {
    std::ifstream status("/proc/" + std::to_string(agent_->pid()) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("RssAnon:"))
        max_anon_kb = std::max(max_anon_kb, std::stol(line.substr(8)));
    }
    usleep(10'000);
  }
  EXPECT_LT(max_anon_kb, 8 * 1024);
  auto r = agent_->Await(id, Ms(30000));  // reading again: the transfer resumes and completes
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["ok"]["size"], kSize);
  EXPECT_EQ(received, kSize);
}

TEST_F(FsTest, LargeTransferThroughput) {
  constexpr size_t kSize = 256u << 20;
  std::string content = Pattern(kSize, 3);
  using Clock = std::chrono::steady_clock;

  auto t0 = Clock::now();
  json r = WriteFile(P("huge"), content);
  double write_s = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(r["ok"], nullptr) << r.dump();

  uint32_t ch = next_channel_++;
  size_t received = 0;
  bool same = true;
  agent_->Out(ch).sink = [&](std::string_view b) {
    if (same && (received + b.size() > kSize ||
                 memcmp(content.data() + received, b.data(), b.size()) != 0)) {
      same = false;
    }
    received += b.size();
  };
  t0 = Clock::now();
  uint64_t id = agent_->Request(
      With({{"op", "readFile"}, {"path", P("huge")}, {"channel", ch}, {"maxBytes", kSize}}, 0));
  auto rr = agent_->Await(id, Ms(120000));
  double read_s = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_TRUE(rr);
  EXPECT_EQ((*rr)["ok"]["size"], kSize);
  EXPECT_EQ(received, kSize);
  EXPECT_TRUE(same);
  EXPECT_TRUE(ReadAll(P("huge")) == content);
  printf("[ bench    ] 256 MiB writeFile through the link: %.0f MB/s\n", kSize / write_s / 1e6);
  printf("[ bench    ] 256 MiB readFile through the link:  %.0f MB/s\n", kSize / read_s / 1e6);
}

// ---------------------------------------------------------------------------
// File handles

TEST_F(FsTest, FileHandles) {
  WriteAll(P("f"), "hello world");
  json h = Ok({{"op", "open"}, {"path", P("f")}});
  ASSERT_TRUE(h.contains("fileHandleId"));
  json ro = h["fileHandleId"];
  // Read-only without options.
  EXPECT_EQ(ErrnoOf(Op({{"op", "fileWrite"}, {"fileHandleId", ro}, {"data", "eA=="}})), EBADF);
  json d = Ok({{"op", "fileRead"}, {"fileHandleId", ro}, {"length", 5}});
  EXPECT_EQ(d["data"], "aGVsbG8=");  // "hello"
  EXPECT_EQ(Ok({{"op", "fileRead"}, {"fileHandleId", ro}, {"length", 100}})["data"], "IHdvcmxk");
  EXPECT_EQ(Ok({{"op", "fileRead"}, {"fileHandleId", ro}, {"length", 100}})["data"],
            nullptr);  // EOF
  EXPECT_EQ(
      Ok({{"op", "fileSeek"}, {"fileHandleId", ro}, {"offset", "6"}, {"whence", 0}})["position"],
      6);
  EXPECT_EQ(Ok({{"op", "fileRead"}, {"fileHandleId", ro}, {"length", 3}})["data"],
            "d29y");  // "wor"
  EXPECT_EQ(
      Ok({{"op", "fileSeek"}, {"fileHandleId", ro}, {"offset", -2}, {"whence", 2}})["position"], 9);
  EXPECT_EQ(
      Ok({{"op", "fileSeek"}, {"fileHandleId", ro}, {"offset", 1}, {"whence", 1}})["position"], 10);
  EXPECT_EQ(
      ErrnoOf(Op({{"op", "fileSeek"}, {"fileHandleId", ro}, {"offset", "x1"}, {"whence", 0}})),
      EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "fileSeek"}, {"fileHandleId", ro}, {"offset", 0}, {"whence", 3}})),
            EINVAL);
  EXPECT_EQ(Ok({{"op", "fileStat"}, {"fileHandleId", ro}})["size"], 11);
  Ok({{"op", "fileClose"}, {"fileHandleId", ro}});
  EXPECT_EQ(ErrnoOf(Op({{"op", "fileRead"}, {"fileHandleId", ro}, {"length", 1}})), EBADF);
  EXPECT_EQ(ErrnoOf(Op({{"op", "fileClose"}, {"fileHandleId", ro}})), EBADF);

  json rw = Ok({{"op", "create"}, {"path", P("g")}})["fileHandleId"];
  EXPECT_EQ(Ok({{"op", "fileWrite"}, {"fileHandleId", rw}, {"data", "YWJjZGVm"}})["bytesWritten"],
            6);
  Ok({{"op", "fileSync"}, {"fileHandleId", rw}});
  Ok({{"op", "fileSyncData"}, {"fileHandleId", rw}});
  EXPECT_EQ(ReadAll(P("g")), "abcdef");
  Ok({{"op", "fileTruncate"}, {"fileHandleId", rw}, {"len", 2}});
  EXPECT_EQ(ReadAll(P("g")), "ab");
  Ok({{"op", "fileTruncate"}, {"fileHandleId", rw}});
  EXPECT_EQ(ReadAll(P("g")), "");
  Ok({{"op", "fileUtime"},
      {"fileHandleId", rw},
      {"atime", "2001-01-01T00:00:00.000Z"},
      {"mtime", "2002-01-01T00:00:00.000Z"}});
  EXPECT_EQ(Ok({{"op", "fileStat"}, {"fileHandleId", rw}})["mtime"], "2002-01-01T00:00:00.000Z");
  std::string too_big(512 * 1024 + 3, 'x');
  EXPECT_EQ(ErrnoOf(Op({{"op", "fileWrite"}, {"fileHandleId", rw}, {"data", too_big}})), EINVAL);
  EXPECT_EQ(ErrnoOf(Op({{"op", "fileWrite"}, {"fileHandleId", rw}, {"data", "not base64!"}})),
            EINVAL);
  // A 512 KiB read is the most one reply carries.
  WriteAll(P("h"), std::string(700 * 1024, 'z'));
  json big = Ok({{"op", "open"}, {"path", P("h")}, {"options", {{"read", true}}}})["fileHandleId"];
  EXPECT_EQ(Ok({{"op", "fileRead"}, {"fileHandleId", big}, {"length", 1 << 20}})["data"]
                .get<std::string>()
                .size(),
            512u * 1024 / 3 * 4 + 4);
  Ok({{"op", "fileClose"}, {"fileHandleId", rw}});
  Ok({{"op", "fileClose"}, {"fileHandleId", big}});

  // Open options, Deno semantics.
  EXPECT_EQ(
      ErrnoOf(Op(
          {{"op", "open"}, {"path", P("n")}, {"options", {{"write", true}, {"createNew", true}}}})),
      0);
  EXPECT_EQ(
      ErrnoOf(Op(
          {{"op", "open"}, {"path", P("n")}, {"options", {{"write", true}, {"createNew", true}}}})),
      EEXIST);
  EXPECT_EQ(ErrnoOf(Op({{"op", "open"}, {"path", P("nx")}, {"options", {{"write", true}}}})),
            ENOENT);
  EXPECT_EQ(ErrnoOf(Op({{"op", "open"}, {"path", P("n")}, {"options", {{"create", true}}}})),
            EINVAL);
  json ap = Ok({{"op", "open"}, {"path", P("g")}, {"options", {{"append", true}}}})["fileHandleId"];
  Ok({{"op", "fileWrite"}, {"fileHandleId", ap}, {"data", "MTI="}});
  Ok({{"op", "fileWrite"}, {"fileHandleId", ap}, {"data", "MzQ="}});
  EXPECT_EQ(ReadAll(P("g")), "1234");
}

TEST_F(FsTest, HandleLimit) {
  WriteAll(P("f"), "x");
  int opened = 0;
  int last = 0;
  for (int i = 0; i < 1100; ++i) {
    last = ErrnoOf(Op({{"op", "open"}, {"path", P("f")}}));
    if (last != 0) break;
    ++opened;
  }
  EXPECT_EQ(opened, 1024);
  EXPECT_EQ(last, EMFILE);
}

TEST_F(FsTest, ReadingAFifoNeitherHangsNorBlocksThePool) {
  ASSERT_EQ(mkfifo(P("fifo").c_str(), 0644), 0);
  std::string data;
  // No writer: readFile sees EOF at once instead of waiting in open().
  EXPECT_EQ(ReadFile(P("fifo"), &data)["ok"], (json{{"size", 0}}));
  EXPECT_EQ(ErrnoOf(Op({{"op", "copyFile"}, {"fromPath", P("fifo")}, {"toPath", P("x")}})), EINVAL);
  // open() of a FIFO for writing waits for a reader (as in Deno), on a
  // thread of its own: the pool keeps serving.
  std::vector<uint64_t> waiting;
  for (int i = 0; i < 6; ++i) {
    waiting.push_back(agent_->Request(
        With({{"op", "open"}, {"path", P("fifo")}, {"options", {{"write", true}}}}, 0)));
  }
  EXPECT_TRUE(Op({{"op", "stat"}, {"path", P("fifo")}})["ok"]["isFifo"]);
  int rd = open(P("fifo").c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(rd, 0);
  for (uint64_t id : waiting) {
    auto r = agent_->Await(id);
    ASSERT_TRUE(r);
    EXPECT_TRUE((*r)["ok"].contains("fileHandleId"));
  }
  close(rd);
}

TEST(FsLimits, HandleLimitFitsUnderADefaultFileLimit) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  // PID 1 in a sandbox starts with the kernel's 1024 soft limit.
  rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max < 2048) GTEST_SKIP() << "hard limit too low";
  rlimit low = saved;
  low.rlim_cur = 1024;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  auto agent = AgentUnderTest::Start(SANDBOX_AGENT_PATH);
  setrlimit(RLIMIT_NOFILE, &saved);
  ASSERT_NE(agent, nullptr);
  ASSERT_TRUE(agent->WaitUntil([&] { return agent->ready; }));
  json open_req = {{"op", "open"}, {"path", "/dev/null"}, {"uid", 0}, {"gid", 0}, {"cwd", "/"}};
  int opened = 0;
  for (int i = 0; i < 1024; ++i) {
    if (!agent->Call(open_req).contains("ok")) break;
    ++opened;
  }
  EXPECT_EQ(opened, 1024);
  EXPECT_EQ(ErrnoOf(agent->Call(open_req)), EMFILE);
  // Children get the limit the agent started with.
  json spawn = {{"op", "spawn"},
                {"argv", {"sh", "-c", "ulimit -n"}},
                {"env", {"PATH=/usr/bin:/bin"}},
                {"cwd", "/"},
                {"uid", 0},
                {"gid", 0},
                {"stdin", 0},
                {"stdout", 1},
                {"stderr", 0}};
  ASSERT_TRUE(agent->Call(spawn).contains("ok"));
  ASSERT_TRUE(agent->WaitUntil([&] { return agent->Out(1).eof; }));
  EXPECT_EQ(agent->Out(1).data, "1024\n");
}

TEST_F(FsTest, SecondExclusiveLockWaitsWithoutBlockingOtherOps) {
  WriteAll(P("lock"), "");
  json a = Ok({{"op", "open"},
               {"path", P("lock")},
               {"options", {{"read", true}, {"write", true}}}})["fileHandleId"];
  json b = Ok({{"op", "open"},
               {"path", P("lock")},
               {"options", {{"read", true}, {"write", true}}}})["fileHandleId"];
  Ok({{"op", "fileLock"}, {"fileHandleId", a}, {"exclusive", true}});
  uint64_t waiting =
      agent_->Request(With({{"op", "fileLock"}, {"fileHandleId", b}, {"exclusive", true}}, 0));
  agent_->PumpFor(Ms(300));
  EXPECT_FALSE(agent_->responses.contains(waiting));
  // The loop and the pool stay responsive while the lock is contended.
  for (int i = 0; i < 10; ++i)
    EXPECT_TRUE(Op({{"op", "stat"}, {"path", P("lock")}}).contains("ok"));
  EXPECT_TRUE(agent_->Call({{"op", "ping"}}).contains("ok"));
  EXPECT_FALSE(agent_->responses.contains(waiting));
  Ok({{"op", "fileUnlock"}, {"fileHandleId", a}});
  auto r = agent_->Await(waiting);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["ok"], nullptr);
  // Closing a handle ends its wait for a lock.
  json c = Ok({{"op", "open"}, {"path", P("lock")}, {"options", {{"read", true}}}})["fileHandleId"];
  uint64_t doomed =
      agent_->Request(With({{"op", "fileLock"}, {"fileHandleId", c}, {"exclusive", true}}, 0));
  agent_->PumpFor(Ms(100));
  EXPECT_FALSE(agent_->responses.contains(doomed));
  Ok({{"op", "fileClose"}, {"fileHandleId", c}});
  r = agent_->Await(doomed);
  ASSERT_TRUE(r);
  EXPECT_EQ(ErrnoOf(*r), EBADF);
  // Shared locks coexist.
  Ok({{"op", "fileUnlock"}, {"fileHandleId", b}});
  Ok({{"op", "fileLock"}, {"fileHandleId", a}, {"exclusive", false}});
  Ok({{"op", "fileLock"}, {"fileHandleId", b}});
  Ok({{"op", "fileClose"}, {"fileHandleId", a}});
  Ok({{"op", "fileClose"}, {"fileHandleId", b}});
}

// ---------------------------------------------------------------------------
// walk / expandGlob

class WalkTest : public FsTest {
 protected:
  void SetUp() override {
    FsTest::SetUp();
    if (dir_.empty()) return;
    // root/{a.txt, b.md, sub/{c.txt, deep/d.txt}, node_modules/x.txt, link-to-a -> a.txt, loop ->
    // .}
    mkdir(P("root").c_str(), 0755);
    mkdir(P("root/sub").c_str(), 0755);
    mkdir(P("root/sub/deep").c_str(), 0755);
    mkdir(P("root/node_modules").c_str(), 0755);
    for (const char* f : {"root/a.txt", "root/b.md", "root/sub/c.txt", "root/sub/deep/d.txt",
                          "root/node_modules/x.txt"}) {
      WriteAll(P(f), f);
    }
    symlink("a.txt", P("root/link-to-a").c_str());
    symlink(".", P("root/sub/loop").c_str());
    root_ = P("root");
  }
  std::string root_;
};

TEST_F(WalkTest, PreOrderRootFirstWithSymlinksReported) {
  json reply;
  auto entries = Stream({{"op", "walk"}, {"path", root_}}, &reply);
  EXPECT_EQ(reply["ok"], nullptr) << reply.dump();
  auto paths = Paths(entries);
  ASSERT_FALSE(paths.empty());
  EXPECT_EQ(paths[0], root_);
  EXPECT_EQ(entries[0], (json{{"path", root_},
                              {"name", "root"},
                              {"isFile", false},
                              {"isDirectory", true},
                              {"isSymlink", false}}));
  std::set<std::string> got(paths.begin(), paths.end());
  EXPECT_EQ(got, (std::set<std::string>{
                     root_, root_ + "/a.txt", root_ + "/b.md", root_ + "/sub", root_ + "/sub/c.txt",
                     root_ + "/sub/deep", root_ + "/sub/deep/d.txt", root_ + "/node_modules",
                     root_ + "/node_modules/x.txt", root_ + "/link-to-a", root_ + "/sub/loop"}));
  EXPECT_EQ(got.size(), paths.size());
  // A directory precedes its contents.
  auto pos = [&](const std::string& p) {
    return std::find(paths.begin(), paths.end(), p) - paths.begin();
  };
  EXPECT_LT(pos(root_ + "/sub"), pos(root_ + "/sub/c.txt"));
  EXPECT_LT(pos(root_ + "/sub/deep"), pos(root_ + "/sub/deep/d.txt"));
  for (const auto& e : entries) {
    if (e["path"] == root_ + "/sub/loop") {
      EXPECT_EQ(e["isSymlink"], true);
    }
  }
  // maxDepth 0: only the root; 1: root and its children.
  EXPECT_EQ(Paths(Stream({{"op", "walk"}, {"path", root_}, {"maxDepth", 0}})),
            std::vector<std::string>{root_});
  EXPECT_EQ(Stream({{"op", "walk"}, {"path", root_}, {"maxDepth", 1}}).size(), 6u);
  // Relative root: relative paths, as Deno reports them.
  auto rel = Paths(Stream({{"op", "walk"}, {"path", "root/sub/deep"}}));
  EXPECT_EQ(rel, (std::vector<std::string>{"root/sub/deep", "root/sub/deep/d.txt"}));
  // A missing root is an error reply, after EOF.
  Stream({{"op", "walk"}, {"path", P("missing")}}, &reply);
  EXPECT_EQ(ErrnoOf(reply), ENOENT);
}

TEST_F(WalkTest, FollowingASymlinkLoopTerminates) {
  json reply;
  auto entries = Stream({{"op", "walk"}, {"path", root_}, {"followSymlinks", true}}, &reply);
  EXPECT_EQ(reply["ok"], nullptr) << reply.dump();
  auto paths = Paths(entries);
  // sub/loop resolves to sub (canonicalized), which is reported again but
  // not descended a second time.
  EXPECT_EQ(std::count(paths.begin(), paths.end(), root_ + "/sub/c.txt"), 1);
  EXPECT_EQ(std::count(paths.begin(), paths.end(), root_ + "/sub"), 2);
  // link-to-a followed and canonicalized: the real path, still flagged as a symlink entry.
  EXPECT_EQ(std::count(paths.begin(), paths.end(), root_ + "/a.txt"), 2);
  auto nofollow = Paths(Stream({{"op", "walk"}, {"path", root_}, {"followSymlinks", false}}));
  EXPECT_EQ(nofollow.size(), 11u);
}

TEST_F(WalkTest, Filters) {
  auto txt =
      Paths(Stream({{"op", "walk"}, {"path", root_}, {"exts", {"txt"}}, {"includeDirs", false}}));
  std::set<std::string> got(txt.begin(), txt.end());
  EXPECT_EQ(got, (std::set<std::string>{root_ + "/a.txt", root_ + "/sub/c.txt",
                                        root_ + "/sub/deep/d.txt", root_ + "/node_modules/x.txt"}));
  // skip: a skipped directory is not descended.
  auto skipped = Paths(Stream(
      {{"op", "walk"}, {"path", root_}, {"skip", {{{"source", "node_modules"}, {"flags", ""}}}}}));
  for (const auto& p : skipped) EXPECT_EQ(p.find("node_modules"), std::string::npos) << p;
  // match, case-insensitive.
  auto matched = Paths(Stream(
      {{"op", "walk"}, {"path", root_}, {"match", {{{"source", "\\.MD$"}, {"flags", "i"}}}}}));
  EXPECT_EQ(matched, std::vector<std::string>{root_ + "/b.md"});
  auto no_files = Stream(
      {{"op", "walk"}, {"path", root_}, {"includeFiles", false}, {"includeSymlinks", false}});
  for (const auto& e : no_files) EXPECT_EQ(e["isDirectory"], true) << e.dump();
  EXPECT_EQ(no_files.size(), 4u);
}

TEST_F(WalkTest, LargeWalkIsFlowControlled) {
  mkdir(P("many").c_str(), 0755);
  for (int i = 0; i < 5000; ++i)
    WriteAll(P("many/file-with-a-longish-name-" + std::to_string(i)), "");
  uint32_t ch = next_channel_++;
  agent_->Out(ch).auto_window = false;
  uint64_t id = agent_->Request(With({{"op", "walk"}, {"path", P("many")}, {"channel", ch}}, 0));
  ASSERT_TRUE(
      agent_->WaitUntil([&] { return agent_->Out(ch).bytes >= link::kInitialWindow - 200; }));
  agent_->PumpFor(Ms(200));
  EXPECT_LE(agent_->Out(ch).bytes, link::kInitialWindow);
  EXPECT_FALSE(agent_->responses.contains(id));
  agent_->Out(ch).auto_window = true;
  agent_->Grant(ch, link::kInitialWindow);
  auto r = agent_->Await(id, Ms(20000));
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["ok"], nullptr);
  size_t lines = 0;
  uint32_t ch2 = next_channel_++;
  agent_->Out(ch2).sink = [&](std::string_view b) {
    lines += std::count(b.begin(), b.end(), '\n');
  };
  id = agent_->Request(With({{"op", "walk"}, {"path", P("many")}, {"channel", ch2}}, 0));
  ASSERT_TRUE(agent_->Await(id, Ms(20000)));
  EXPECT_EQ(lines, 5001u);
}

TEST_F(WalkTest, ExpandGlob) {
  json reply;
  auto all_txt = Paths(Stream({{"op", "expandGlob"}, {"glob", root_ + "/**/*.txt"}}, &reply));
  EXPECT_EQ(reply["ok"], nullptr) << reply.dump();
  EXPECT_EQ(all_txt, (std::vector<std::string>{root_ + "/a.txt", root_ + "/node_modules/x.txt",
                                               root_ + "/sub/c.txt", root_ + "/sub/deep/d.txt"}));
  auto braces = Paths(Stream({{"op", "expandGlob"}, {"glob", "{a,b}.*"}, {"root", root_}}));
  EXPECT_EQ(braces, (std::vector<std::string>{root_ + "/a.txt", root_ + "/b.md"}));
  // Relative to cwd, with exclude.
  auto excl = Paths(Stream(
      {{"op", "expandGlob"}, {"glob", "root/**/*.txt"}, {"exclude", {"root/node_modules"}}}));
  EXPECT_EQ(excl, (std::vector<std::string>{root_ + "/a.txt", root_ + "/sub/c.txt",
                                            root_ + "/sub/deep/d.txt"}));
  auto dirs = Stream({{"op", "expandGlob"}, {"glob", root_ + "/*"}, {"includeDirs", false}});
  for (const auto& e : dirs) EXPECT_EQ(e["isDirectory"], false) << e.dump();
  EXPECT_EQ(dirs.size(), 3u);  // a.txt, b.md, link-to-a
  EXPECT_TRUE(Stream({{"op", "expandGlob"}, {"glob", P("does/not/exist/*.txt")}}, &reply).empty());
  EXPECT_EQ(reply["ok"], nullptr);
  auto icase =
      Paths(Stream({{"op", "expandGlob"}, {"glob", root_ + "/A.TXT"}, {"caseInsensitive", true}}));
  EXPECT_TRUE(icase.empty());  // a fixed segment is not a pattern: A.TXT does not exist
  auto icase2 =
      Paths(Stream({{"op", "expandGlob"}, {"glob", root_ + "/A.T?T"}, {"caseInsensitive", true}}));
  EXPECT_EQ(icase2, std::vector<std::string>{root_ + "/a.txt"});
}

}  // namespace
}  // namespace sandboxd::agent
