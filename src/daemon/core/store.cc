#include "daemon/core/store.h"

#include <nlohmann/json.hpp>

#include "daemon/core/ids.h"

namespace sandboxd::core {
namespace {

// Owns one prepared statement.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& Bind(int i, std::optional<int64_t> v) {
    if (v) sqlite3_bind_int64(s_, i, *v);
    else sqlite3_bind_null(s_, i);
    return *this;
  }
  int Step() { return sqlite3_step(s_); }
  std::string Text(int c) {
    auto* p = sqlite3_column_text(s_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, c)) : std::string();
  }
  int64_t Int(int c) { return sqlite3_column_int64(s_, c); }
  std::optional<int64_t> OptInt(int c) {
    if (sqlite3_column_type(s_, c) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(s_, c);
  }
  std::unexpected<Error> Fail(const char* what) { return FailMsg(std::string(what) + ": " + sqlite3_errmsg(db_)); }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS tokens(
  hash TEXT PRIMARY KEY,
  org TEXT NOT NULL,
  created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sandboxes(
  id TEXT PRIMARY KEY,
  org TEXT NOT NULL,
  region TEXT NOT NULL,
  labels TEXT NOT NULL,
  config TEXT NOT NULL,
  state TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  stopped_ms INTEGER,
  stop_at_ms INTEGER,
  error TEXT NOT NULL DEFAULT '',
  isolation TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS sandboxes_by_org ON sandboxes(org, created_ms DESC, id DESC);
)sql";

constexpr const char* kSelectCols =
    "SELECT id, org, region, labels, config, state, created_ms, stopped_ms, stop_at_ms, error, isolation "
    "FROM sandboxes ";

SandboxRecord ReadRecord(Stmt& s) {
  SandboxRecord r;
  r.id = s.Text(0);
  r.org = s.Text(1);
  r.region = s.Text(2);
  auto labels = nlohmann::json::parse(s.Text(3), nullptr, false);
  if (labels.is_object()) {
    for (auto& [k, v] : labels.items()) {
      if (v.is_string()) r.labels[k] = v.get<std::string>();
    }
  }
  r.config_json = s.Text(4);
  r.state = s.Text(5);
  r.created_ms = s.Int(6);
  r.stopped_ms = s.OptInt(7);
  r.stop_at_ms = s.OptInt(8);
  r.error = s.Text(9);
  r.isolation = s.Text(10);
  return r;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return FailMsg("opening store " + path + ": " + msg);
  }
  std::unique_ptr<Store> s(new Store(db));
  sqlite3_busy_timeout(db, 5000);
  SBX_TRY(s->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"));
  SBX_TRY(s->Exec(kSchema));
  SBX_TRY(s->Migrate());
  return s;
}

Status Store::Migrate() {
  // `isolation` (which backend owns a sandbox) came with per-create backends;
  // a data dir of an earlier daemon lacks it.
  bool has_isolation = false;
  {
    Stmt s(db_, "PRAGMA table_info(sandboxes)");
    if (!s.ok()) return s.Fail("reading the schema");
    while (s.Step() == SQLITE_ROW) {
      if (s.Text(1) == "isolation") has_isolation = true;
    }
  }
  if (!has_isolation) SBX_TRY(Exec("ALTER TABLE sandboxes ADD COLUMN isolation TEXT NOT NULL DEFAULT ''"));
  return {};
}

Store::~Store() { sqlite3_close(db_); }

Status Store::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return FailMsg("store: " + msg);
  }
  return {};
}

Result<std::string> Store::CreateToken(const std::string& org) {
  std::string token = NewOrgToken();
  Stmt s(db_, "INSERT INTO tokens(hash, org, created_ms) VALUES(?, ?, strftime('%s','now')*1000)");
  s.Bind(1, HashToken(token)).Bind(2, org);
  if (s.Step() != SQLITE_DONE) return s.Fail("creating token");
  return token;
}

Result<std::optional<std::string>> Store::LookupToken(const std::string& token) {
  Stmt s(db_, "SELECT org FROM tokens WHERE hash = ?");
  s.Bind(1, HashToken(token));
  int rc = s.Step();
  if (rc == SQLITE_ROW) return std::optional<std::string>(s.Text(0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return s.Fail("looking up token");
}

Status Store::InsertSandbox(const SandboxRecord& r) {
  Stmt s(db_,
         "INSERT INTO sandboxes(id, org, region, labels, config, state, created_ms, stopped_ms, stop_at_ms, error, "
         "isolation) VALUES(?,?,?,?,?,?,?,?,?,?,?)");
  s.Bind(1, r.id).Bind(2, r.org).Bind(3, r.region).Bind(4, nlohmann::json(r.labels).dump());
  s.Bind(5, r.config_json).Bind(6, r.state).Bind(7, r.created_ms).Bind(8, r.stopped_ms);
  s.Bind(9, r.stop_at_ms).Bind(10, r.error).Bind(11, r.isolation);
  if (s.Step() != SQLITE_DONE) return s.Fail("inserting sandbox");
  return {};
}

Status Store::UpdateState(const std::string& id, const std::string& state, std::optional<int64_t> stopped_ms,
                          const std::string& error) {
  Stmt s(db_, "UPDATE sandboxes SET state = ?, stopped_ms = COALESCE(?, stopped_ms), "
              "error = CASE WHEN ? = '' THEN error ELSE ? END WHERE id = ?");
  s.Bind(1, state).Bind(2, stopped_ms).Bind(3, error).Bind(4, error).Bind(5, id);
  if (s.Step() != SQLITE_DONE) return s.Fail("updating sandbox state");
  return {};
}

Status Store::UpdateStopAt(const std::string& id, std::optional<int64_t> stop_at_ms) {
  Stmt s(db_, "UPDATE sandboxes SET stop_at_ms = ? WHERE id = ?");
  s.Bind(1, stop_at_ms).Bind(2, id);
  if (s.Step() != SQLITE_DONE) return s.Fail("updating stop time");
  return {};
}

Result<std::optional<SandboxRecord>> Store::GetSandbox(const std::string& id) {
  Stmt s(db_, (std::string(kSelectCols) + "WHERE id = ?").c_str());
  s.Bind(1, id);
  int rc = s.Step();
  if (rc == SQLITE_ROW) return std::optional<SandboxRecord>(ReadRecord(s));
  if (rc == SQLITE_DONE) return std::optional<SandboxRecord>();
  return s.Fail("reading sandbox");
}

Result<ListPage> Store::ListSandboxes(const ListQuery& q) {
  // Cursor: "<created_ms>.<id>" of the last item of the previous page; pages go
  // newest first. Label filtering happens here rather than in SQL: labels are
  // few and small, and a JSON predicate per label would not use an index anyway.
  int64_t c_ms = INT64_MAX;
  std::string c_id = "~";
  if (!q.cursor.empty()) {
    auto dot = q.cursor.find('.');
    if (dot == std::string::npos) return FailMsg("invalid cursor");
    try {
      c_ms = std::stoll(q.cursor.substr(0, dot));
    } catch (...) {
      return FailMsg("invalid cursor");
    }
    c_id = q.cursor.substr(dot + 1);
  }
  Stmt s(db_, (std::string(kSelectCols) +
               "WHERE org = ? AND (stopped_ms IS NULL OR stopped_ms >= ?) AND "
               "(created_ms < ? OR (created_ms = ? AND id < ?)) ORDER BY created_ms DESC, id DESC")
                  .c_str());
  s.Bind(1, q.org).Bind(2, q.stopped_after_ms).Bind(3, c_ms).Bind(4, c_ms).Bind(5, c_id);
  ListPage page;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    SandboxRecord r = ReadRecord(s);
    bool match = true;
    for (const auto& [k, v] : q.labels) {
      auto it = r.labels.find(k);
      if (it == r.labels.end() || it->second != v) {
        match = false;
        break;
      }
    }
    if (!match) continue;
    if (page.items.size() == q.limit) {
      const auto& last = page.items.back();
      page.next_cursor = std::to_string(last.created_ms) + "." + last.id;
      break;
    }
    page.items.push_back(std::move(r));
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return s.Fail("listing sandboxes");
  return page;
}

Result<std::vector<StaleSandbox>> Store::StopAllLive(int64_t now_ms, const std::string& reason) {
  std::vector<StaleSandbox> ids;
  {
    Stmt s(db_, "SELECT id, isolation FROM sandboxes WHERE state NOT IN ('stopped', 'failed')");
    while (s.Step() == SQLITE_ROW) ids.push_back({s.Text(0), s.Text(1)});
  }
  Stmt u(db_, "UPDATE sandboxes SET state = 'stopped', stopped_ms = ?, error = ? "
              "WHERE state NOT IN ('stopped', 'failed')");
  u.Bind(1, now_ms).Bind(2, reason);
  if (u.Step() != SQLITE_DONE) return u.Fail("stopping stale sandboxes");
  return ids;
}

}  // namespace sandboxd::core
