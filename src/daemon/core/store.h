// The embedded SQLite store: org tokens (hashed) and sandbox records.
// Not thread-safe: the daemon uses it from its event-loop thread only. Several
// processes may open the same file (WAL mode, busy timeout): `sandboxd token
// create` writes while a daemon runs.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace sandboxd::core {

struct SandboxRecord {
  std::string id;
  std::string org;
  std::string region;
  std::map<std::string, std::string> labels;
  std::string config_json;  // validated create options, secrets' values removed
  std::string state;        // creating | running | stopping | stopped | failed
  int64_t created_ms = 0;
  std::optional<int64_t> stopped_ms;
  std::optional<int64_t> stop_at_ms;
  std::string error;  // why it failed, if it did
  // The isolation backend that owns (owned) it: "namespaces" | "microvm";
  // empty for records written before the column existed.
  std::string isolation;
};

// A record a previous daemon run left in a live state.
struct StaleSandbox {
  std::string id;
  std::string isolation;
};

struct ListQuery {
  std::string org;
  std::map<std::string, std::string> labels;  // every one must match
  int64_t stopped_after_ms = 0;               // hide records stopped before this
  size_t limit = 100;
  std::string cursor;  // opaque, from the previous page
};

struct ListPage {
  std::vector<SandboxRecord> items;
  std::string next_cursor;  // empty: last page
};

class Store {
 public:
  static Result<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Creates a token for `org` and returns it; only its hash is stored.
  Result<std::string> CreateToken(const std::string& org);
  // The org of a token, or nullopt when unknown.
  Result<std::optional<std::string>> LookupToken(const std::string& token);

  Status InsertSandbox(const SandboxRecord& r);
  Status UpdateState(const std::string& id, const std::string& state, std::optional<int64_t> stopped_ms,
                     const std::string& error = "");
  Status UpdateStopAt(const std::string& id, std::optional<int64_t> stop_at_ms);
  Result<std::optional<SandboxRecord>> GetSandbox(const std::string& id);
  Result<ListPage> ListSandboxes(const ListQuery& q);
  // Marks records a previous daemon left in a live state as stopped; returns them.
  Result<std::vector<StaleSandbox>> StopAllLive(int64_t now_ms, const std::string& reason);

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  Status Exec(const char* sql);
  // Schema changes of later versions, applied to an existing database.
  Status Migrate();
  sqlite3* db_;
};

}  // namespace sandboxd::core
