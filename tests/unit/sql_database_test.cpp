// The `sql` tool's database (tools/sql_database.h): read-only by construction. Every kind of write
// is refused whatever its spelling, the file is unchanged afterwards, and rows, bytes and time are
// bounded. The grammar's pattern admits SELECTs over the real tables and columns only.
#include "tools/sql_database.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

namespace inferbox {
namespace {

namespace fs = std::filesystem;
using json   = nlohmann::json;

class sql_database_test : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("inferbox-sql-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        path_       = (dir_ / "shop.db").string();
        sqlite3 *db = nullptr;
        ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
        const char *setup = "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL);"
                            "CREATE TABLE orders(id INTEGER PRIMARY KEY, item_id INTEGER, qty INTEGER);"
                            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) "
                            "INSERT INTO items(name, price) SELECT 'item' || i, i * 1.5 FROM n;"
                            "INSERT INTO orders(item_id, qty) VALUES (1, 2), (2, 5);";
        ASSERT_EQ(sqlite3_exec(db, setup, nullptr, nullptr, nullptr), SQLITE_OK);
        sqlite3_close(db);
        before_ = fs::file_size(path_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::shared_ptr<sql_database> open(sql_limits limits = {}) {
        auto db = sql_database::open("shop", path_, limits);
        EXPECT_TRUE(db) << db.err().message;
        return db ? db.value() : nullptr;
    }

    fs::path    dir_;
    std::string path_;
    uintmax_t   before_ = 0;
};

TEST_F(sql_database_test, ReadsTheSchemaWithSamples) {
    auto db = open();
    ASSERT_TRUE(db);
    ASSERT_EQ(db->schema().size(), 2u);
    EXPECT_EQ(db->schema()[0].name, "items");
    EXPECT_EQ(db->schema()[0].rows, 500);
    EXPECT_EQ(db->schema()[0].columns.size(), 3u);
    EXPECT_EQ(db->schema()[0].columns[1].samples.size(), 3u);
    const auto text = db->describe();
    EXPECT_NE(text.find("items(id INTEGER"), std::string::npos) << text;
    EXPECT_NE(text.find("name TEXT e.g. item1|item2|item3"), std::string::npos) << text;
    EXPECT_NE(text.find("orders("), std::string::npos) << text;
}

TEST_F(sql_database_test, SelectsReturnColumnsAndRows) {
    auto db = open();
    ASSERT_TRUE(db);
    auto r = db->run("SELECT name, price FROM items WHERE price > 740 ORDER BY price DESC");
    ASSERT_TRUE(r) << r.err().message;
    const auto j = json::parse(*r);
    EXPECT_EQ(j["columns"], json({"name", "price"}));
    ASSERT_EQ(j["row_count"], 7); // 1.5 * i > 740 for i = 494 .. 500
    EXPECT_EQ(j["rows"][0], json({"item500", 750.0}));
    EXPECT_FALSE(j["truncated"].get<bool>());
    auto cte = db->run("WITH t AS (SELECT qty FROM orders) SELECT sum(qty) AS total FROM t");
    ASSERT_TRUE(cte) << cte.err().message;
    EXPECT_EQ(json::parse(*cte)["rows"][0][0], 7);
}

TEST_F(sql_database_test, EveryKindOfWriteIsRefusedAndTheFileIsUnchanged) {
    auto db = open();
    ASSERT_TRUE(db);
    const auto copy = (dir_ / "copy.db").string();
    for (const std::string &sql : std::vector<std::string>{
             "INSERT INTO items(name, price) VALUES ('x', 1)",
             "insert into items(name) values ('x')",
             "REPLACE INTO items(id, name) VALUES (1, 'x')",
             "UPDATE items SET price = 0",
             "DELETE FROM orders",
             "CREATE TABLE t(x)",
             "CREATE INDEX i ON items(name)",
             "CREATE VIEW v AS SELECT 1",
             "CREATE TRIGGER tr AFTER INSERT ON items BEGIN SELECT 1; END",
             "DROP TABLE orders",
             "ALTER TABLE items ADD COLUMN y",
             "ATTACH DATABASE '" + copy + "' AS other",
             "DETACH DATABASE main",
             "PRAGMA writable_schema = 1",
             "PRAGMA user_version = 5",
             "PRAGMA journal_mode = DELETE",
             "VACUUM",
             "VACUUM INTO '" + copy + "'",
             "REINDEX",
             "ANALYZE",
             "BEGIN IMMEDIATE",
             "SAVEPOINT s",
             "SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')",
             "WITH t AS (SELECT 1) INSERT INTO items(name) SELECT 'x' FROM t",
             "WITH t AS (SELECT 1) DELETE FROM orders",
             "SELECT 1; DELETE FROM orders",
             "SELECT 1; ATTACH DATABASE '" + copy + "' AS other",
             "/* hi */ DELETE FROM orders",
             "-- comment\nDROP TABLE items",
         }) {
        auto r = db->run(sql);
        EXPECT_FALSE(r) << "ran: " << sql;
        if (!r) {
            EXPECT_EQ(r.err().code, "sql_error") << sql;
            EXPECT_FALSE(r.err().message.empty()) << sql;
        }
    }
    EXPECT_FALSE(fs::exists(copy));
    EXPECT_EQ(fs::file_size(path_), before_);
    auto count = db->run("SELECT count(*) FROM items");
    ASSERT_TRUE(count);
    EXPECT_EQ(json::parse(*count)["rows"][0][0], 500);
    auto orders = db->run("SELECT count(*) FROM orders");
    ASSERT_TRUE(orders);
    EXPECT_EQ(json::parse(*orders)["rows"][0][0], 2);
}

TEST_F(sql_database_test, RowsBytesAndTimeAreBounded) {
    sql_limits lim;
    lim.max_rows   = 10;
    lim.timeout_ms = 200;
    auto db        = open(lim);
    ASSERT_TRUE(db);
    auto rows = db->run("SELECT * FROM items");
    ASSERT_TRUE(rows);
    auto j = json::parse(*rows);
    EXPECT_EQ(j["row_count"], 10);
    EXPECT_TRUE(j["truncated"].get<bool>());

    lim.max_rows  = 1000;
    lim.max_bytes = 2000;
    auto small    = open(lim);
    auto bytes    = small->run("SELECT * FROM items");
    ASSERT_TRUE(bytes);
    EXPECT_LE(bytes->size(), 2000u);
    EXPECT_TRUE(json::parse(*bytes)["truncated"].get<bool>());

    const auto started = std::chrono::steady_clock::now();
    auto forever = db->run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c");
    ASSERT_FALSE(forever);
    EXPECT_NE(forever.err().message.find("time limit of 200 ms"), std::string::npos) << forever.err().message;
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30)); // interrupted, not run out
}

TEST_F(sql_database_test, ErrorsAreForTheModelToRead) {
    auto db = open();
    ASSERT_TRUE(db);
    auto typo = db->run("SELECT nme FROM items");
    ASSERT_FALSE(typo);
    EXPECT_NE(typo.err().message.find("no such column: nme"), std::string::npos) << typo.err().message;
    auto empty = db->run("   ");
    ASSERT_FALSE(empty);
}

TEST_F(sql_database_test, ThePatternAdmitsSelectsOverRealTablesAndColumnsOnly) {
    auto db = open();
    ASSERT_TRUE(db);
    const std::regex re(db->query_pattern());
    for (const char *ok :
         {"SELECT * FROM items", "SELECT name, price FROM items WHERE price > 3 ORDER BY price DESC LIMIT 5",
          "SELECT COUNT(*) FROM orders", "SELECT name FROM items WHERE name LIKE 'item1%' AND id < 20",
          "SELECT SUM(qty) FROM orders GROUP BY item_id"}) {
        EXPECT_TRUE(std::regex_match(ok, re)) << ok;
        EXPECT_TRUE(db->run(ok)) << ok;
    }
    for (const char *bad : {"DELETE FROM items", "SELECT secret FROM items", "SELECT * FROM users",
                            "SELECT * FROM items; DROP TABLE items", "SELECT name FROM items WHERE name = \"x\"",
                            "SELECT * FROM items WHERE id LIKE 'x'", "SELECT AVG(name) FROM items",
                            "SELECT * FROM items WHERE price = 'cheap'"}) {
        EXPECT_FALSE(std::regex_match(bad, re)) << bad;
    }
}

TEST(sql_database_spec, NamesAndPaths) {
    auto s = parse_sql_database_spec("shop=/data/shop.db");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->name, "shop");
    EXPECT_EQ(s->path, "/data/shop.db");
    EXPECT_FALSE(parse_sql_database_spec("shop"));
    EXPECT_FALSE(parse_sql_database_spec("=x"));
    EXPECT_FALSE(parse_sql_database_spec("a b=x"));
    EXPECT_FALSE(parse_sql_database_spec("shop="));
}

TEST(sql_database_open, AMissingOrEmptyFileIsRefusedNamingIt) {
    auto missing = sql_database::open("x", "/nonexistent/x.db");
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.err().message.find("SQL database 'x' (/nonexistent/x.db)"), std::string::npos);
}

} // namespace
} // namespace inferbox
