// Sandbox and Process: the WebSocket JSON-RPC side of WIRE.md.
//
// Threading model: every Sandbox owns one connection with its own
// io_context, run on one internal thread ("the I/O thread") that does all
// socket work: reading, writing, the 2 s text `ping` keepalive. Public methods
// are a blocking facade: they post work to the I/O thread and wait for the
// answer. Output callbacks (SpawnOptions::on_stdout/on_stderr) run on the I/O
// thread; they must not call blocking methods of the same Sandbox/Process
// (those detect it and fail with INVALID_ARGUMENT instead of deadlocking).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/client.h"
#include "client/error.h"
#include "client/wire.h"

namespace sandboxd::client {

class Connection;  // internal
struct ProcessState;  // internal

struct CreateOptions {
  int memory_mb = 1280;
  // "session" (dies when this connection closes) or a duration ("30s", "5m").
  std::string timeout = "session";
  Labels labels;
  // Sandbox-wide environment, set with envSet RPCs after the upgrade (like the SDK).
  std::vector<std::pair<std::string, std::string>> env;
  // Outbound allowlist; nullopt = not sent (server default: no access).
  std::optional<std::vector<std::string>> allow_net;
  // Secrets substituted by the server's egress proxy (Secret in wire.h). Their
  // hosts become reachable too. Names must be unique (else INVALID_ARGUMENT).
  std::vector<Secret> secrets;
  // sandboxd extension: the region the sandbox must run in.
  std::optional<std::string> region;
  // sandboxd extension: the isolation backend, "namespaces" or "microvm"
  // (absent: the server's default). The server answers 400 for a backend it
  // does not have.
  std::optional<std::string> isolation;
};

enum class Stdio { kPiped, kNull };

// Called with each chunk of output, on the I/O thread, in stream order.
using OutputCallback = std::function<void(std::string_view chunk)>;

struct SpawnOptions {
  std::vector<std::pair<std::string, std::string>> env;  // layered over the sandbox env
  std::optional<std::string> cwd;
  Stdio stdin_mode = Stdio::kNull;
  Stdio stdout_mode = Stdio::kPiped;
  Stdio stderr_mode = Stdio::kPiped;
  // When unset and the stream is piped, output is collected and returned by
  // Process::TakeStdout()/TakeStderr().
  OutputCallback on_stdout;
  OutputCallback on_stderr;
};

// --- filesystem (WIRE.md §4.2–§4.4) -------------------------------------------

// FileInfo of stat/lstat: the commonly used keys, plus the whole object.
struct FileInfo {
  bool is_file = false;
  bool is_directory = false;
  bool is_symlink = false;
  std::uint64_t size = 0;
  std::uint32_t mode = 0;  // full st_mode
  std::string mtime;       // ISO-8601 as sent
  nlohmann::json raw;
};
Result<FileInfo> DecodeFileInfo(const nlohmann::json& ok);

struct DirEntry {
  std::string name;
  bool is_file = false;
  bool is_directory = false;
  bool is_symlink = false;
};

// One record of a walk/expandGlob stream.
struct WalkEntry {
  std::string path;
  std::string name;
  bool is_file = false;
  bool is_directory = false;
  bool is_symlink = false;
};
// Decodes one record (the UTF-8 JSON text of one enqueue chunk).
Result<WalkEntry> DecodeWalkEntry(std::string_view chunk);

struct WriteFileOptions {
  bool append = false;
  std::optional<bool> create;  // server default: true
  bool create_new = false;
  std::optional<std::uint32_t> mode;
};
// The `options` object for writeFile (omits defaults; null when empty).
nlohmann::json WriteFileOptionsJson(const WriteFileOptions& options);

struct WalkOptions {
  std::optional<int> max_depth;
  bool include_files = true;
  bool include_dirs = true;
  bool include_symlinks = true;
  bool follow_symlinks = false;
};

// Progress of a transfer: bytes moved so far. Called on the calling thread.
using ProgressCallback = std::function<void(std::uint64_t bytes)>;

// Local I/O failure during a transfer (the message names the errno).
inline constexpr char kLocalIo[] = "LOCAL_IO";

// A process running in a sandbox. Cheap to copy (shared handle); every copy
// refers to the same process. All methods are thread-safe.
class Process {
 public:
  std::int64_t pid() const;

  // Sends bytes to the process's stdin (stdin_mode must be kPiped). Blocks
  // until the data has been handed to the socket (simple back-pressure).
  Status WriteStdin(std::string_view data);
  // Sends end-of-stream on stdin. Idempotent.
  Status CloseStdin();
  // Blocks until the process exited and its piped output streams finished.
  // A process that exits non-zero is a success here: inspect the status.
  Result<ProcessStatus> Wait();
  // Like Wait but gives up after `timeout` (TIMEOUT error).
  Result<ProcessStatus> WaitFor(std::chrono::milliseconds timeout);
  // processKill with a signal name ("SIGTERM", "SIGKILL", ...). An already
  // exited process yields an error with code "ENOENT".
  Status Kill(std::string_view signal = "SIGTERM");
  // Collected output (only when no callback was given); clears the buffer.
  std::string TakeStdout();
  std::string TakeStderr();

 private:
  friend class Sandbox;
  Process(std::shared_ptr<Connection> conn, std::shared_ptr<ProcessState> state)
      : conn_(std::move(conn)), state_(std::move(state)) {}
  std::shared_ptr<Connection> conn_;
  std::shared_ptr<ProcessState> state_;
};

// One WebSocket connection to a sandbox. Movable, not copyable. The
// destructor closes the connection (which destroys a "session" sandbox).
// Methods may be called from several threads concurrently, except that
// Close()/Kill()/destruction must not race with other calls on the same
// object.
class Sandbox {
 public:
  // GET /api/v3/sandboxes/create (upgrade), then one envSet per env entry.
  // A failed upgrade yields the server's {code, message} (e.g. 401
  // INVALID_TOKEN, 400 INVALID_CONFIG) with http_status set.
  static Result<Sandbox> Create(const Client& client, const CreateOptions& options = {});
  // GET /api/v3/sandbox/{id}/connect (upgrade). 404 SANDBOX_NOT_FOUND for
  // unknown/stopped ids; INVALID_ARGUMENT for ids not matching §6.1.
  static Result<Sandbox> Connect(const Client& client, std::string_view id);

  Sandbox(Sandbox&&) noexcept;
  Sandbox& operator=(Sandbox&&) noexcept;
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;
  ~Sandbox();

  const std::string& id() const { return id_; }
  // True once the server or Close() ended the connection.
  bool closed() const;

  // Starts `command` with `args`. Blocks until the server answered spawn.
  Result<Process> Spawn(std::string_view command, const std::vector<std::string>& args = {},
                        SpawnOptions options = {});
  // Raw JSON-RPC call: returns the `ok` value or the decoded error.
  Result<nlohmann::json> Call(std::string_view method, nlohmann::json params = nlohmann::json::object());

  Status EnvSet(std::string_view key, std::string_view value);
  Result<std::optional<std::string>> EnvGet(std::string_view key);

  // --- filesystem. Paths are sandbox paths (relative ones resolve against
  // /home/app). Failures carry the server's code ("ENOENT", "EACCES", ...)
  // and constructorName in Error::kind ("NotFound", ...). Blocking; callable
  // from several threads (each call is independent on the connection).

  // readFile: the whole file inline in one message (the server refuses files
  // above 64 MiB; use DownloadTo for those).
  Result<std::string> ReadFile(std::string_view path);
  Result<std::string> ReadTextFile(std::string_view path);
  // writeFile: inline base64 `content` up to kInlineWriteMax bytes, otherwise
  // streamed like WriteFileFrom.
  static constexpr std::size_t kInlineWriteMax = 1 << 20;
  Status WriteFile(std::string_view path, std::string_view bytes, const WriteFileOptions& options = {});
  // writeFile with `contentStreamId`: reads `fd` until EOF and sends chunks of
  // at most 64 KiB. Memory stays bounded: at most kUploadWindow bytes are
  // queued on the socket (the protocol has no back-pressure, so the pace is
  // the TCP send rate). Returns the number of bytes sent. A local read
  // failure sends $sandbox.stream.error and returns LOCAL_IO.
  static constexpr std::size_t kUploadWindow = 1 << 20;
  Result<std::uint64_t> WriteFileFrom(std::string_view path, int fd, const WriteFileOptions& options = {},
                                      const ProgressCallback& progress = nullptr);
  // fs.download for one file: open {read:true}, fileRead {length: 65536}
  // until data is null, fileClose; bytes go to `fd`. Reads are issued one at
  // a time: the agent serves a handle's requests on a thread pool and may
  // answer in any order, so pipelined reads on one handle (without seeks)
  // could reorder data. Returns the number of bytes written.
  Result<std::uint64_t> DownloadTo(std::string_view path, int fd, const ProgressCallback& progress = nullptr,
                                   std::size_t chunk = 64 * 1024);
  // Like DownloadTo, with `streams` handles read concurrently: handle k reads
  // the chunks k, k+streams, ... each after a fileSeek to its offset, so the
  // result is correct whatever order replies come in. `fd` must support
  // pwrite (a regular file). Returns the file size.
  Result<std::uint64_t> DownloadToParallel(std::string_view path, int fd, int streams,
                                           const ProgressCallback& progress = nullptr,
                                           std::size_t chunk = 64 * 1024);
  Result<FileInfo> Stat(std::string_view path);
  Result<FileInfo> Lstat(std::string_view path);
  Status Mkdir(std::string_view path, bool recursive = false, std::optional<std::uint32_t> mode = std::nullopt);
  Status Remove(std::string_view path, bool recursive = false);
  Result<std::vector<DirEntry>> ReadDir(std::string_view path);
  Result<std::string> RealPath(std::string_view path);
  Result<std::string> ReadLink(std::string_view path);
  // Creates `path` as a symlink whose content is `target` (verbatim).
  Status Symlink(std::string_view target, std::string_view path);
  // walk: entries in the server's (pre-)order, root first.
  Result<std::vector<WalkEntry>> Walk(std::string_view path, const WalkOptions& options = {});
  // expandGlob {glob, includeDirs}: matches sorted by the server.
  Result<std::vector<WalkEntry>> ExpandGlob(std::string_view glob, bool include_dirs = true);

  // REST DELETE, then waits (up to 30 s) until the server closed the socket.
  Status Kill();
  // Closes the WebSocket (close handshake, up to 30 s) and stops the I/O
  // thread. Idempotent. A "session" sandbox is destroyed by the server.
  Status Close();

 private:
  Sandbox(Client client, std::string id, std::shared_ptr<Connection> conn)
      : client_(std::move(client)), id_(std::move(id)), conn_(std::move(conn)) {}

  Client client_;
  std::string id_;
  std::shared_ptr<Connection> conn_;
};

}  // namespace sandboxd::client
