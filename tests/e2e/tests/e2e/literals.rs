//! The literals `shared::store::sql` makes, through a real server: whatever a value holds (quotes,
//! backslashes, NUL, `?`, invalid UTF-8, 64 KiB; integer extremes; times to the millisecond, the
//! columns' precision, below which a time is truncated: `time_precision.rs`), the text-protocol
//! statement that carries it stores exactly that value, and a `SELECT` of the literal alone reads
//! back exactly that value.

use std::future::Future;

use chrono::{NaiveDate, NaiveDateTime};
use flash_sale_e2e::testing::TestDb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use shared::store::pool::Pool;
use shared::store::sql::{Literal, Sql};
use sqlx::Row;

/// Random cases per property, beside the explicit ones: a few seconds in all.
const CASES: u32 = 96;

/// A database of its own with one nullable column per kind of value.
async fn scratch() -> TestDb {
    let db = TestDb::not_created();
    shared::store::db::create_database_if_missing(&db.url)
        .await
        .expect("create the test database");
    Sql::new(
        "CREATE TABLE literals (
             id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
             long_bytes LONGBLOB NULL,
             short_bytes VARBINARY(1024) NULL,
             text_value TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
             signed_value BIGINT NULL,
             unsigned_value BIGINT UNSIGNED NULL,
             at DATETIME(6) NULL
         ) ENGINE = InnoDB",
    )
    .execute(&db.pool)
    .await
    .expect("create the table");
    db
}

/// Runs `check` on every explicit value, then on `CASES` values drawn from `strategy`; a failure
/// is shrunk to its smallest case and reported with it.
fn check_all<S, F, Fut>(explicit: Vec<S::Value>, strategy: S, check: F)
where
    S: Strategy,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        for value in explicit {
            let shown = format!("{value:?}");
            if let Err(err) = runtime.block_on(check(value)) {
                panic!("{err} for {shown:.200}");
            }
        }
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |value| runtime.block_on(check(value)))
            .unwrap_or_else(|err| panic!("{err}"));
    });
}

/// Stores `value` in `column` (NULL for `None`) and reads it back, and selects the literal alone.
async fn round_trip<T>(pool: &Pool, column: &str, value: T) -> Result<(), TestCaseError>
where
    T: Literal + Clone + PartialEq + std::fmt::Debug + sqlx::Type<sqlx::MySql>,
    T: for<'r> sqlx::Decode<'r, sqlx::MySql>,
{
    round_trip_selecting(pool, column, "SELECT ?", value).await
}

/// As [`round_trip`], the literal alone selected by `select` (a template with one `?`).
async fn round_trip_selecting<T>(
    pool: &Pool,
    column: &str,
    select: &str,
    value: T,
) -> Result<(), TestCaseError>
where
    T: Literal + Clone + PartialEq + std::fmt::Debug + sqlx::Type<sqlx::MySql>,
    T: for<'r> sqlx::Decode<'r, sqlx::MySql>,
{
    let inserted = Sql::new(format!("INSERT INTO literals ({column}) VALUES (?)"))
        .bind(value.clone())
        .execute(pool)
        .await
        .map_err(fail)?;
    let stored: T = Sql::new(format!("SELECT {column} FROM literals WHERE id = ?"))
        .bind(inserted.last_insert_id())
        .fetch_scalar(pool)
        .await
        .map_err(fail)?;
    prop_assert_eq!(&stored, &value, "stored in {}", column);
    let selected: T = Sql::new(select)
        .bind(value.clone())
        .fetch_scalar(pool)
        .await
        .map_err(fail)?;
    prop_assert_eq!(&selected, &value, "selected alone");
    Ok(())
}

fn fail(err: sqlx::Error) -> TestCaseError {
    TestCaseError::fail(err.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn any_bytes_read_back_unchanged() {
    let db = scratch().await;
    let explicit: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"'".to_vec(),
        b"\"".to_vec(),
        b"\\".to_vec(),
        b"\0".to_vec(),
        b"?".to_vec(),
        vec![0xFF, 0xC3],
        b"x' OR '1'='1".to_vec(),
        b"\\'; DROP TABLE literals; -- \0?\xff\xc3\"".to_vec(),
        (0..=255).collect(),
        (0..64 * 1024).map(|i| (i % 251) as u8).collect(),
    ];
    // Bytes that mean something in SQL text, often, and any byte at all.
    let byte = prop_oneof![
        any::<u8>(),
        proptest::sample::select(b"'\"\\\0?`%_-#;\xff\xc3".to_vec()),
    ];
    let pool = &db.pool;
    check_all(
        explicit,
        proptest::collection::vec(byte, 0..600),
        |bytes| async move {
            if bytes.len() <= 1024 {
                round_trip(pool, "short_bytes", bytes.clone()).await?;
            }
            round_trip(pool, "long_bytes", bytes).await
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn any_string_reads_back_unchanged() {
    let db = scratch().await;
    let explicit: Vec<String> = [
        "",
        "'",
        "\"",
        "\\",
        "\0",
        "?",
        "it's a \"quote\" \\ and ? and \0",
        "ünïcödé ✓ 🦀 𝄞",
        "\u{10FFFF}\u{FFFE}\u{FEFF}",
    ]
    .map(String::from)
    .to_vec();
    let string = proptest::collection::vec(any::<char>(), 0..200)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    check_all(explicit, string, |text| {
        round_trip(&db.pool, "text_value", text)
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_holding_placeholders_and_quotes_leaves_the_next_one_to_the_next_value() {
    let db = scratch().await;
    let (text, bytes, number) = ("?' ? \\'", b"?\\'\0\xff".to_vec(), -7_i64);
    let row = Sql::new("SELECT ?, ?, ?")
        .bind(text)
        .bind(&bytes)
        .bind(number)
        .fetch_one(&db.pool)
        .await
        .expect("selected");
    assert_eq!(row.try_get::<String, _>(0).expect("a string"), text);
    assert_eq!(row.try_get::<Vec<u8>, _>(1).expect("bytes"), bytes);
    assert_eq!(row.try_get::<i64, _>(2).expect("an integer"), number);
}

#[tokio::test(flavor = "multi_thread")]
async fn any_integer_reads_back_unchanged() {
    let db = scratch().await;
    check_all(
        vec![i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX],
        any::<i64>(),
        |n| round_trip(&db.pool, "signed_value", n),
    );
    check_all(
        vec![0, 1, u64::from(u32::MAX), i64::MAX as u64 + 1, u64::MAX],
        any::<u64>(),
        // A bare integer is typed as the smallest signed type it fits (only one past i64::MAX
        // is BIGINT UNSIGNED), and sqlx reads a u64 from an unsigned column only.
        |n| round_trip_selecting(&db.pool, "unsigned_value", "SELECT CAST(? AS UNSIGNED)", n),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn any_time_reads_back_unchanged_to_the_millisecond() {
    let db = scratch().await;
    let at = |y, mo, d, h, mi, s, micro| {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_micro_opt(h, mi, s, micro))
            .expect("a valid time")
    };
    // DATETIME's documented range.
    let (first, last) = (
        at(1000, 1, 1, 0, 0, 0, 0),
        at(9999, 12, 31, 23, 59, 59, 999_000),
    );
    let explicit = vec![
        Some(first),
        Some(last),
        Some(at(2026, 12, 2, 9, 5, 7, 120_000)),
        Some(at(2024, 2, 29, 23, 59, 59, 1_000)),
        None,
    ];
    let time = (
        first.and_utc().timestamp()..=last.and_utc().timestamp(),
        0..1_000_u32,
    )
        .prop_map(|(seconds, millis)| {
            chrono::DateTime::from_timestamp(seconds, millis * 1_000_000)
                .expect("within DATETIME's range")
                .naive_utc()
        });
    check_all(
        explicit,
        proptest::option::of(time),
        |at: Option<NaiveDateTime>| round_trip(&db.pool, "at", at),
    );
}
