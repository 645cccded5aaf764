// Sandbox filesystem methods (WIRE.md §4.2–§4.4, §7.7/§7.8).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include "client/connection.h"
#include "client/sandbox.h"

namespace sandboxd::client {

namespace {

constexpr std::size_t kStreamChunk = 64 * 1024;

bool Bool(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::uint64_t Number(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<std::uint64_t>();
  if (it->is_number_integer()) return static_cast<std::uint64_t>(std::max<std::int64_t>(0, it->get<std::int64_t>()));
  double d = it->get<double>();
  return d > 0 ? static_cast<std::uint64_t>(d) : 0;
}

Error LocalError(const std::string& what, int err) {
  return Error::Make(kLocalIo, what + ": " + std::strerror(err));
}

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(LocalError("writing local file", errno));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

Status ToStatus(const Result<json>& r) {
  if (!r) return std::unexpected(r.error());
  return {};
}

}  // namespace

Result<FileInfo> DecodeFileInfo(const json& ok) {
  if (!ok.is_object() || !ok.contains("isFile") || !ok.contains("size")) {
    return Fail(kProtocolError, "malformed FileInfo " + ok.dump());
  }
  FileInfo fi;
  fi.is_file = Bool(ok, "isFile");
  fi.is_directory = Bool(ok, "isDirectory");
  fi.is_symlink = Bool(ok, "isSymlink");
  fi.size = Number(ok, "size");
  fi.mode = static_cast<std::uint32_t>(Number(ok, "mode"));
  if (auto it = ok.find("mtime"); it != ok.end() && it->is_string()) fi.mtime = it->get<std::string>();
  fi.raw = ok;
  return fi;
}

Result<WalkEntry> DecodeWalkEntry(std::string_view chunk) {
  json j = json::parse(chunk, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("path") || !j["path"].is_string()) {
    return Fail(kProtocolError, "malformed walk entry: " + std::string(chunk.substr(0, 200)));
  }
  WalkEntry e;
  e.path = j["path"].get<std::string>();
  if (auto it = j.find("name"); it != j.end() && it->is_string()) e.name = it->get<std::string>();
  e.is_file = Bool(j, "isFile");
  e.is_directory = Bool(j, "isDirectory");
  e.is_symlink = Bool(j, "isSymlink");
  return e;
}

json WriteFileOptionsJson(const WriteFileOptions& o) {
  json j = json::object();
  if (o.append) j["append"] = true;
  if (o.create) j["create"] = *o.create;
  if (o.create_new) j["createNew"] = true;
  if (o.mode) j["mode"] = *o.mode;
  return j.empty() ? json(nullptr) : j;
}

Result<std::string> Sandbox::ReadFile(std::string_view path) {
  auto r = Call("readFile", json{{"path", path}});
  if (!r) return std::unexpected(r.error());
  if (!r->is_string()) return Fail(kProtocolError, "readFile: expected base64 string");
  return Base64Decode(r->get_ref<const std::string&>());
}

Result<std::string> Sandbox::ReadTextFile(std::string_view path) {
  auto r = Call("readTextFile", json{{"path", path}});
  if (!r) return std::unexpected(r.error());
  if (!r->is_string()) return Fail(kProtocolError, "readTextFile: expected a string");
  return r->get<std::string>();
}

Status Sandbox::WriteFile(std::string_view path, std::string_view bytes, const WriteFileOptions& options) {
  if (bytes.size() > kInlineWriteMax) {
    // Stream from memory through a pipe-free path: chunks straight from `bytes`.
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return Fail(LocalError("pipe", errno));
    // Writer thread feeds the pipe; WriteFileFrom reads it (bounded memory).
    std::thread writer([fd = fds[1], bytes] {
      (void)WriteAll(fd, bytes);
      ::close(fd);
    });
    auto r = WriteFileFrom(path, fds[0], options);
    ::close(fds[0]);  // unblocks the writer if the upload stopped early
    writer.join();
    if (!r) return std::unexpected(r.error());
    return {};
  }
  json params = {{"path", path}, {"content", Base64Encode(bytes)}};
  if (json o = WriteFileOptionsJson(options); !o.is_null()) params["options"] = std::move(o);
  return ToStatus(Call("writeFile", std::move(params)));
}

Result<std::uint64_t> Sandbox::WriteFileFrom(std::string_view path, int fd, const WriteFileOptions& options,
                                             const ProgressCallback& progress) {
  if (!conn_) return Fail(kConnectionClosed, "sandbox was moved from");
  Connection* c = conn_.get();
  if (c->OnIoThread()) return Fail(kInvalidArgument, "blocking call from an output callback");
  // Shared with callbacks that may outlive this frame if the connection dies.
  struct State {
    std::optional<Result<json>> result;
    std::size_t in_flight = 0;
    std::optional<Error> send_error;
  };
  auto st = std::make_shared<State>();
  const std::int64_t sid = NextClientStreamId();
  // WIRE §3.2: start goes out before the request; frames keep call order.
  c->SendAsync(MakeStreamNotification(StreamEvent::kStart, sid), nullptr);
  json params = {{"path", path}, {"contentStreamId", sid}};
  if (json o = WriteFileOptionsJson(options); !o.is_null()) params["options"] = std::move(o);
  c->CallAsync("writeFile", std::move(params), [c, st](Result<json> r) {
    {
      std::lock_guard lock(c->mu());
      st->result = std::move(r);
    }
    c->Notify();
  });
  std::string buf(kStreamChunk, '\0');
  std::uint64_t sent = 0;
  std::optional<Error> local_error;
  for (;;) {
    // Wait for room in the window, or for an early answer (an error).
    bool stop = false;
    c->WaitUntil(
        [&] {
          stop = st->result.has_value() || st->send_error.has_value();
          return stop || st->in_flight < kUploadWindow;
        },
        std::nullopt);
    if (stop || c->OutStreamCancelled(sid)) break;
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      local_error = LocalError("reading local file", errno);
      c->SendAsync(MakeStreamNotification(StreamEvent::kError, sid), nullptr);
      break;
    }
    if (n == 0) {
      c->SendAsync(MakeStreamNotification(StreamEvent::kEnd, sid), nullptr);
      break;
    }
    std::size_t len = static_cast<std::size_t>(n);
    {
      std::lock_guard lock(c->mu());
      st->in_flight += len;
    }
    c->SendAsync(MakeStreamNotification(StreamEvent::kEnqueue, sid, std::string_view(buf.data(), len)),
                 [c, st, len](Status s) {
                   {
                     std::lock_guard lock(c->mu());
                     st->in_flight -= len;
                     if (!s && !st->send_error) st->send_error = s.error();
                   }
                   c->Notify();
                 });
    sent += len;
    if (progress) progress(sent);
  }
  c->WaitUntil([&] { return st->result.has_value(); }, std::nullopt);
  c->ForgetOutStream(sid);
  Result<json> r;
  {
    std::lock_guard lock(c->mu());
    r = std::move(*st->result);
  }
  if (local_error) return Fail(*local_error);
  if (!r) return std::unexpected(r.error());
  return sent;
}

Result<std::uint64_t> Sandbox::DownloadTo(std::string_view path, int fd, const ProgressCallback& progress,
                                          std::size_t chunk) {
  auto opened = Call("open", json{{"path", path}, {"options", {{"read", true}}}});
  if (!opened) return std::unexpected(opened.error());
  if (!opened->is_object() || !opened->contains("fileHandleId") || !(*opened)["fileHandleId"].is_number_integer()) {
    return Fail(kProtocolError, "open: malformed result " + opened->dump());
  }
  const std::int64_t handle = (*opened)["fileHandleId"].get<std::int64_t>();
  std::uint64_t total = 0;
  Status status;
  for (;;) {
    auto r = Call("fileRead", json{{"fileHandleId", handle}, {"length", chunk}});
    if (!r) {
      status = std::unexpected(r.error());
      break;
    }
    auto data = r->is_object() ? r->find("data") : r->end();
    if (data == r->end()) {
      status = Fail(kProtocolError, "fileRead: malformed result");
      break;
    }
    if (data->is_null()) break;  // EOF
    if (!data->is_string()) {
      status = Fail(kProtocolError, "fileRead: data must be base64");
      break;
    }
    auto bytes = Base64Decode(data->get_ref<const std::string&>());
    if (!bytes) {
      status = std::unexpected(bytes.error());
      break;
    }
    if (bytes->empty()) {
      status = Fail(kProtocolError, "fileRead: empty data before EOF");
      break;
    }
    if (auto w = WriteAll(fd, *bytes); !w) {
      status = w;
      break;
    }
    total += bytes->size();
    if (progress) progress(total);
  }
  // The SDK never closes download handles; we do (handles are bounded).
  (void)Call("fileClose", json{{"fileHandleId", handle}});
  if (!status) return std::unexpected(status.error());
  return total;
}

Result<std::uint64_t> Sandbox::DownloadToParallel(std::string_view path, int fd, int streams,
                                                  const ProgressCallback& progress, std::size_t chunk) {
  if (streams <= 1) return DownloadTo(path, fd, progress, chunk);
  std::vector<std::int64_t> handles;
  auto close_all = [&] {
    for (auto h : handles) (void)Call("fileClose", json{{"fileHandleId", h}});
  };
  for (int i = 0; i < streams; ++i) {
    auto opened = Call("open", json{{"path", path}, {"options", {{"read", true}}}});
    if (!opened || !opened->is_object() || !(*opened)["fileHandleId"].is_number_integer()) {
      close_all();
      if (!opened) return std::unexpected(opened.error());
      return Fail(kProtocolError, "open: malformed result " + opened->dump());
    }
    handles.push_back((*opened)["fileHandleId"].get<std::int64_t>());
  }
  std::mutex mu;
  std::optional<Error> error;
  std::uint64_t done = 0, end = 0;
  auto worker = [&](int k) {
    const std::int64_t h = handles[static_cast<std::size_t>(k)];
    for (std::uint64_t off = static_cast<std::uint64_t>(k) * chunk;; off += static_cast<std::uint64_t>(streams) * chunk) {
      {
        std::lock_guard lock(mu);
        if (error) return;
      }
      auto sk = Call("fileSeek", json{{"fileHandleId", h}, {"offset", off}, {"whence", 0}});
      if (!sk) {
        std::lock_guard lock(mu);
        if (!error) error = sk.error();
        return;
      }
      std::size_t got = 0;
      bool eof = false;
      while (got < chunk) {  // a short read is legal before EOF
        auto r = Call("fileRead", json{{"fileHandleId", h}, {"length", chunk - got}});
        std::optional<Error> e;
        std::string bytes;
        if (!r) {
          e = r.error();
        } else if (auto d = r->is_object() ? r->find("data") : r->end(); d == r->end()) {
          e = Error::Make(kProtocolError, "fileRead: malformed result");
        } else if (d->is_null()) {
          eof = true;
        } else if (auto b = d->is_string() ? Base64Decode(d->get_ref<const std::string&>())
                                           : Result<std::string>(std::unexpected(Error::Make(kProtocolError, "fileRead: data")));
                   !b || b->empty()) {
          e = b ? Error::Make(kProtocolError, "fileRead: empty data before EOF") : b.error();
        } else {
          bytes = std::move(*b);
        }
        if (!e && !bytes.empty()) {
          std::string_view rest = bytes;
          auto pos = static_cast<off_t>(off + got);
          while (!rest.empty()) {
            ssize_t n = ::pwrite(fd, rest.data(), rest.size(), pos);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
              e = LocalError("writing local file", errno);
              break;
            }
            rest.remove_prefix(static_cast<std::size_t>(n));
            pos += n;
          }
          got += bytes.size();
        }
        if (e) {
          std::lock_guard lock(mu);
          if (!error) error = *e;
          return;
        }
        if (eof) break;
      }
      std::uint64_t so_far;
      {
        std::lock_guard lock(mu);
        done += got;
        if (got > 0) end = std::max(end, off + got);
        so_far = done;
      }
      if (eof) return;
      if (k == 0 && progress) progress(so_far);
    }
  };
  std::vector<std::thread> threads;
  for (int k = 1; k < streams; ++k) threads.emplace_back(worker, k);
  // The calling thread works too (and reports progress between its chunks).
  worker(0);
  for (auto& t : threads) t.join();
  close_all();
  if (error) return Fail(*error);
  if (progress) progress(done);
  return end;
}

Result<FileInfo> Sandbox::Stat(std::string_view path) {
  auto r = Call("stat", json{{"path", path}});
  if (!r) return std::unexpected(r.error());
  return DecodeFileInfo(*r);
}

Result<FileInfo> Sandbox::Lstat(std::string_view path) {
  auto r = Call("lstat", json{{"path", path}});
  if (!r) return std::unexpected(r.error());
  return DecodeFileInfo(*r);
}

Status Sandbox::Mkdir(std::string_view path, bool recursive, std::optional<std::uint32_t> mode) {
  json params = {{"path", path}};
  json o = json::object();
  if (recursive) o["recursive"] = true;
  if (mode) o["mode"] = *mode;
  if (!o.empty()) params["options"] = std::move(o);
  return ToStatus(Call("mkdir", std::move(params)));
}

Status Sandbox::Remove(std::string_view path, bool recursive) {
  json params = {{"path", path}};
  if (recursive) params["options"] = {{"recursive", true}};
  return ToStatus(Call("remove", std::move(params)));
}

Result<std::vector<DirEntry>> Sandbox::ReadDir(std::string_view path) {
  auto r = Call("readDir", json{{"path", path}});
  if (!r) return std::unexpected(r.error());
  if (!r->is_array()) return Fail(kProtocolError, "readDir: expected an array");
  std::vector<DirEntry> out;
  for (const auto& e : *r) {
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string()) {
      return Fail(kProtocolError, "readDir: malformed entry " + e.dump());
    }
    out.push_back({e["name"].get<std::string>(), Bool(e, "isFile"), Bool(e, "isDirectory"), Bool(e, "isSymlink")});
  }
  return out;
}

Result<std::string> Sandbox::RealPath(std::string_view path) {
  auto r = Call("realPath", json{{"path", path}});
  if (!r) return std::unexpected(r.error());
  if (!r->is_string()) return Fail(kProtocolError, "realPath: expected a string");
  return r->get<std::string>();
}

Result<std::string> Sandbox::ReadLink(std::string_view path) {
  auto r = Call("readLink", json{{"path", path}});
  if (!r) return std::unexpected(r.error());
  if (!r->is_string()) return Fail(kProtocolError, "readLink: expected a string");
  return r->get<std::string>();
}

Status Sandbox::Symlink(std::string_view target, std::string_view path) {
  return ToStatus(Call("symlink", json{{"target", target}, {"path", path}}));
}

namespace {

// Runs a record-stream method (walk/expandGlob) and collects its entries.
Result<std::vector<WalkEntry>> CollectRecords(Connection* c, Result<json> started) {
  if (!started) return std::unexpected(started.error());
  auto sid = started->is_object() ? started->find("streamId") : started->end();
  if (sid == started->end() || !sid->is_number_integer()) {
    return Fail(kProtocolError, "expected {streamId}, got " + started->dump());
  }
  struct State {
    std::vector<WalkEntry> entries;
    std::optional<Error> error;
    bool done = false;
  };
  auto st = std::make_shared<State>();
  c->AttachSink(sid->get<std::int64_t>(), [c, st](const StreamNotification& n) {
    {
      std::lock_guard lock(c->mu());
      if (st->done) return;
      switch (n.event) {
        case StreamEvent::kEnqueue: {
          if (st->error) break;
          auto e = DecodeWalkEntry(n.data);
          if (e) {
            st->entries.push_back(std::move(*e));
          } else {
            st->error = e.error();
          }
          break;
        }
        case StreamEvent::kEnd:
          st->done = true;
          break;
        case StreamEvent::kError:
          st->done = true;
          if (!st->error) st->error = n.error ? *n.error : Error::Make(kRpcError, "stream failed");
          break;
        default:
          break;
      }
    }
    c->Notify();
  });
  c->WaitUntil([&] { return st->done; }, std::nullopt);
  std::lock_guard lock(c->mu());
  if (st->error) return Fail(*st->error);
  return std::move(st->entries);
}

}  // namespace

Result<std::vector<WalkEntry>> Sandbox::Walk(std::string_view path, const WalkOptions& options) {
  if (!conn_) return Fail(kConnectionClosed, "sandbox was moved from");
  json params = {{"path", path}};
  if (options.max_depth) params["maxDepth"] = *options.max_depth;
  if (!options.include_files) params["includeFiles"] = false;
  if (!options.include_dirs) params["includeDirs"] = false;
  if (!options.include_symlinks) params["includeSymlinks"] = false;
  if (options.follow_symlinks) params["followSymlinks"] = true;
  return CollectRecords(conn_.get(), conn_->Call("walk", std::move(params)));
}

Result<std::vector<WalkEntry>> Sandbox::ExpandGlob(std::string_view glob, bool include_dirs) {
  if (!conn_) return Fail(kConnectionClosed, "sandbox was moved from");
  json params = {{"glob", glob}};
  if (!include_dirs) params["includeDirs"] = false;
  return CollectRecords(conn_.get(), conn_->Call("expandGlob", std::move(params)));
}

}  // namespace sandboxd::client
