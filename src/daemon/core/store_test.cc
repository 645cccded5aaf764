#include "daemon/core/store.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

namespace sandboxd::core {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sandboxd-store-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto s = Store::Open(dir_ + "/db");
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  SandboxRecord Rec(std::string id, std::string org, int64_t created, std::map<std::string, std::string> labels) {
    SandboxRecord r;
    r.id = std::move(id);
    r.org = std::move(org);
    r.region = "loc";
    r.labels = std::move(labels);
    r.config_json = "{}";
    r.state = "running";
    r.created_ms = created;
    return r;
  }
  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, TokensAreScopedAndHashed) {
  auto a = store_->CreateToken("acme");
  ASSERT_TRUE(a);
  auto org = store_->LookupToken(*a);
  ASSERT_TRUE(org && *org);
  EXPECT_EQ(**org, "acme");
  auto none = store_->LookupToken("ddo_nope");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST_F(StoreTest, ListFiltersByOrgLabelsAndRetentionAndPaginates) {
  ASSERT_TRUE(store_->InsertSandbox(Rec("a", "o1", 100, {{"env", "dev"}})));
  ASSERT_TRUE(store_->InsertSandbox(Rec("b", "o1", 200, {{"env", "prod"}})));
  ASSERT_TRUE(store_->InsertSandbox(Rec("c", "o1", 300, {{"env", "dev"}, {"x", "y"}})));
  ASSERT_TRUE(store_->InsertSandbox(Rec("d", "o2", 400, {{"env", "dev"}})));
  ASSERT_TRUE(store_->UpdateState("a", "stopped", 150));

  ListQuery q;
  q.org = "o1";
  auto all = store_->ListSandboxes(q);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->items.size(), 3u);
  EXPECT_EQ(all->items[0].id, "c");  // newest first

  q.labels = {{"env", "dev"}};
  auto dev = store_->ListSandboxes(q);
  ASSERT_EQ(dev->items.size(), 2u);

  q.stopped_after_ms = 160;  // "a" stopped at 150: too long ago
  auto recent = store_->ListSandboxes(q);
  ASSERT_EQ(recent->items.size(), 1u);
  EXPECT_EQ(recent->items[0].id, "c");

  ListQuery paged;
  paged.org = "o1";
  paged.limit = 2;
  auto p1 = store_->ListSandboxes(paged);
  ASSERT_EQ(p1->items.size(), 2u);
  ASSERT_FALSE(p1->next_cursor.empty());
  paged.cursor = p1->next_cursor;
  auto p2 = store_->ListSandboxes(paged);
  ASSERT_EQ(p2->items.size(), 1u);
  EXPECT_EQ(p2->items[0].id, "a");
  EXPECT_TRUE(p2->next_cursor.empty());

  paged.cursor = "garbage";
  EXPECT_FALSE(store_->ListSandboxes(paged));
}

TEST_F(StoreTest, StopAllLiveMarksLeftovers) {
  auto a_rec = Rec("a", "o1", 100, {});
  a_rec.isolation = "microvm";
  ASSERT_TRUE(store_->InsertSandbox(a_rec));
  ASSERT_TRUE(store_->InsertSandbox(Rec("b", "o1", 200, {})));
  ASSERT_TRUE(store_->UpdateState("b", "stopped", 250));
  auto ids = store_->StopAllLive(999, "daemon restarted");
  ASSERT_TRUE(ids);
  ASSERT_EQ(ids->size(), 1u);
  EXPECT_EQ((*ids)[0].id, "a");
  EXPECT_EQ((*ids)[0].isolation, "microvm");  // so the restart reaps with the right backend
  auto a = store_->GetSandbox("a");
  EXPECT_EQ((*a)->state, "stopped");
  EXPECT_EQ(*(*a)->stopped_ms, 999);
}

TEST_F(StoreTest, RecordsTheOwningBackend) {
  auto r = Rec("vm", "o1", 100, {});
  r.isolation = "microvm";
  ASSERT_TRUE(store_->InsertSandbox(r));
  ASSERT_TRUE(store_->InsertSandbox(Rec("ns", "o1", 200, {})));
  EXPECT_EQ((*store_->GetSandbox("vm"))->isolation, "microvm");
  EXPECT_EQ((*store_->GetSandbox("ns"))->isolation, "");
}

TEST_F(StoreTest, AddsTheIsolationColumnToAnOlderDatabase) {
  store_.reset();
  const std::string path = dir_ + "/old.db";
  {  // The schema before per-create backends, with one live record.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE sandboxes(id TEXT PRIMARY KEY, org TEXT NOT NULL, region TEXT NOT NULL, "
                           "labels TEXT NOT NULL, config TEXT NOT NULL, state TEXT NOT NULL, created_ms INTEGER "
                           "NOT NULL, stopped_ms INTEGER, stop_at_ms INTEGER, error TEXT NOT NULL DEFAULT '');"
                           "INSERT INTO sandboxes VALUES('old','o1','loc','{}','{}','running',1,NULL,NULL,'');",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  for (int run = 0; run < 2; ++run) {  // the migration is idempotent
    auto s = Store::Open(path);
    ASSERT_TRUE(s) << s.error().message;
    auto old = (*s)->GetSandbox("old");
    ASSERT_TRUE(old && *old);
    EXPECT_EQ((*old)->isolation, "");
    auto r = Rec("new" + std::to_string(run), "o1", 2, {});
    r.isolation = "namespaces";
    ASSERT_TRUE((*s)->InsertSandbox(r));
    EXPECT_EQ((*(*s)->GetSandbox(r.id))->isolation, "namespaces");
  }
}

}  // namespace
}  // namespace sandboxd::core
