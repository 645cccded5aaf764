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
  // sandboxd extension: the region the sandbox must run in.
  std::optional<std::string> region;
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
