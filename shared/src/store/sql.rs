//! The one place SQL literals are made.
//!
//! The request paths speak the text protocol only: a server-side prepared statement (which is
//! what sqlx makes of every query with bind parameters) pins an RDS Proxy client connection to
//! one database connection for the rest of its life. So values travel inside the statement's
//! text, rendered here and nowhere else, each from a typed value:
//!
//! - integers from Rust integers (digits and a sign, nothing else);
//! - strings as `_utf8mb4 X'…'` and bytes as `X'…'`: hex digits only, so no value can close a
//!   literal, escape a quote or smuggle a NUL, whatever bytes it holds;
//! - times as `TIMESTAMP'YYYY-MM-DD hh:mm:ss.fff'` from a `NaiveDateTime`, and spans of time
//!   as `INTERVAL n MICROSECOND` from an [`Interval`], both cut to whole milliseconds (see the
//!   impl for why);
//! - `None` as `NULL`.
//!
//! A statement is a template written in our code with `?` where each value goes, like sqlx's own
//! queries, and [`Sql::bind`] fills the next `?`. Templates never carry a value: injection is
//! impossible by construction, not by escaping. All of it is valid MySQL 8 and MariaDB alike.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{NaiveDateTime, SubsecRound as _};
use sqlx::mysql::{MySqlQueryResult, MySqlRow};
use sqlx::{Executor, MySql};

/// RDS Proxy pins a client connection that sends a statement longer than this, whatever it says:
/// statements built from lists keep under it.
pub const PROXY_PINS_TEXT_OVER: usize = 16 * 1024;

/// The most ids one `IN (…)` list takes: a UUID renders as an 86-character literal with its
/// separator, so 128 of them make about 11 KB, under [`PROXY_PINS_TEXT_OVER`].
pub const IDS_PER_STATEMENT: usize = 128;

/// A value that can stand in a statement's text.
pub trait Literal {
    fn write_literal(&self, out: &mut String);
}

macro_rules! integer_literals {
    ($($int:ty),*) => {$(
        impl Literal for $int {
            fn write_literal(&self, out: &mut String) {
                // Writing to a String cannot fail.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_literals!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Literal for bool {
    fn write_literal(&self, out: &mut String) {
        out.push_str(if *self { "TRUE" } else { "FALSE" });
    }
}

impl Literal for [u8] {
    fn write_literal(&self, out: &mut String) {
        out.push_str("X'");
        push_hex(out, self);
        out.push('\'');
    }
}

/// A string in the connection's Unicode character set. The introducer keeps it a character
/// string (a bare `X'…'` is a binary one, which would compare and sort as bytes).
impl Literal for str {
    fn write_literal(&self, out: &mut String) {
        out.push_str("_utf8mb4 X'");
        push_hex(out, self.as_bytes());
        out.push('\'');
    }
}

impl Literal for String {
    fn write_literal(&self, out: &mut String) {
        self.as_str().write_literal(out);
    }
}

impl Literal for Vec<u8> {
    fn write_literal(&self, out: &mut String) {
        self.as_slice().write_literal(out);
    }
}

/// Truncated to whole milliseconds, the precision of every time column (`DATETIME(3)`), so that
/// no server is left a fraction to drop, for the servers drop it differently: MySQL 8 rounds a
/// fraction a column cannot keep, without a warning, unless `sql_mode` has
/// `TIME_TRUNCATE_FRACTIONAL` (MySQL Reference Manual, "Fractional Seconds in Time Values",
/// <https://dev.mysql.com/doc/en/fractional-seconds.html>); MariaDB truncates it unless
/// `sql_mode` has `TIME_ROUND_FRACTIONAL` (MariaDB 10.4 and later,
/// <https://mariadb.com/docs/xpand/ref/mdb/sql-modes/TIME_ROUND_FRACTIONAL/>). A payment received
/// 0.4 ms before its order's `payment_due_at` would be stored before the deadline by one and at
/// it by the other; truncated here it is before it on both, as it was when it was judged
/// (a deadline is itself whole milliseconds, so truncating never moves a time across one).
impl Literal for NaiveDateTime {
    fn write_literal(&self, out: &mut String) {
        let at = self.trunc_subsecs(3);
        let _ = write!(out, "TIMESTAMP'{}'", at.format("%Y-%m-%d %H:%M:%S%.3f"));
    }
}

/// A span of time added to or taken from one in SQL (`UTC_TIMESTAMP(3) + ?`), as
/// `INTERVAL n MICROSECOND` with `n` whole milliseconds: the result, stored in a `DATETIME(3)`
/// column, has no fraction for a server to round or truncate (see [`NaiveDateTime`]'s literal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl Literal for Interval {
    fn write_literal(&self, out: &mut String) {
        let micros = u64::try_from(self.0.as_millis())
            .unwrap_or(u64::MAX / 1000)
            .saturating_mul(1000);
        let _ = write!(out, "INTERVAL {micros} MICROSECOND");
    }
}

impl<T: Literal> Literal for Option<T> {
    fn write_literal(&self, out: &mut String) {
        match self {
            Some(value) => value.write_literal(out),
            None => out.push_str("NULL"),
        }
    }
}

impl<T: Literal + ?Sized> Literal for &T {
    fn write_literal(&self, out: &mut String) {
        (**self).write_literal(out);
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// One value rendered alone, for a list built in a loop (`IN (…)`, a multi-row `VALUES`).
pub fn literal(value: impl Literal) -> String {
    let mut out = String::new();
    value.write_literal(&mut out);
    out
}

/// Values rendered and comma-separated, for an `IN (…)` list built from a collection.
pub fn list<T: Literal>(values: impl IntoIterator<Item = T>) -> String {
    let mut out = String::new();
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        value.write_literal(&mut out);
    }
    out
}

/// A statement being filled in: the template's text up to the next `?`, the values so far.
#[derive(Debug)]
pub struct Sql {
    text: String,
    rest: String,
}

impl Sql {
    /// `template` is SQL written in our code, with a `?` where each value goes.
    pub fn new(template: impl Into<String>) -> Self {
        let rest = template.into();
        Self {
            text: String::with_capacity(rest.len() + 64),
            rest,
        }
    }

    /// Fills the next `?` with `value`.
    ///
    /// # Panics
    /// When the template has no `?` left: a statement written with the wrong number of values
    /// is a bug in our code, caught the first time any test runs it.
    #[must_use]
    pub fn bind(mut self, value: impl Literal) -> Self {
        let at = self
            .rest
            .find('?')
            .unwrap_or_else(|| panic!("more values than `?` in {:?}", self.text));
        self.text.push_str(&self.rest[..at]);
        value.write_literal(&mut self.text);
        self.rest.drain(..=at);
        self
    }

    /// The finished statement.
    ///
    /// # Panics
    /// When a `?` was left without a value (see [`Sql::bind`]).
    pub fn into_text(mut self) -> String {
        assert!(
            !self.rest.contains('?'),
            "a `?` left without a value in {:?}",
            self.rest
        );
        self.text.push_str(&self.rest);
        if self.text.len() > PROXY_PINS_TEXT_OVER {
            let opening: String = self.text.chars().take(40).collect();
            tracing::warn!(
                bytes = self.text.len(),
                statement = %opening,
                "a statement over 16 KB pins its RDS Proxy connection"
            );
        }
        self.text
    }

    pub async fn execute<'c, E>(self, executor: E) -> Result<MySqlQueryResult, sqlx::Error>
    where
        E: Executor<'c, Database = MySql>,
    {
        executor.execute(self.into_text().as_str()).await
    }

    pub async fn fetch_optional<'c, E>(self, executor: E) -> Result<Option<MySqlRow>, sqlx::Error>
    where
        E: Executor<'c, Database = MySql>,
    {
        executor.fetch_optional(self.into_text().as_str()).await
    }

    pub async fn fetch_one<'c, E>(self, executor: E) -> Result<MySqlRow, sqlx::Error>
    where
        E: Executor<'c, Database = MySql>,
    {
        executor.fetch_one(self.into_text().as_str()).await
    }

    pub async fn fetch_all<'c, E>(self, executor: E) -> Result<Vec<MySqlRow>, sqlx::Error>
    where
        E: Executor<'c, Database = MySql>,
    {
        executor.fetch_all(self.into_text().as_str()).await
    }

    /// The first column of every row, decoded as each arrives: no row is kept (a million ids
    /// take 8 MB, not the rows' hundred).
    pub async fn fetch_column<'c, T, E>(self, executor: E) -> Result<Vec<T>, sqlx::Error>
    where
        E: Executor<'c, Database = MySql>,
        T: for<'r> sqlx::Decode<'r, MySql> + sqlx::Type<MySql>,
    {
        use futures_util::TryStreamExt as _;
        use sqlx::Row as _;
        let text = self.into_text();
        let mut rows = executor.fetch(text.as_str());
        let mut column = Vec::new();
        while let Some(row) = rows.try_next().await? {
            column.push(row.try_get(0)?);
        }
        Ok(column)
    }

    /// The first column of the one row the statement returns.
    pub async fn fetch_scalar<'c, T, E>(self, executor: E) -> Result<T, sqlx::Error>
    where
        E: Executor<'c, Database = MySql>,
        T: for<'r> sqlx::Decode<'r, MySql> + sqlx::Type<MySql>,
    {
        use sqlx::Row as _;
        self.fetch_one(executor).await?.try_get(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_fills_the_next_placeholder_in_order() {
        let text = Sql::new("SELECT ? FROM t WHERE a = ? AND b = ? AND c = ?")
            .bind(-42_i64)
            .bind("o'k")
            .bind(None::<u32>)
            .bind(true)
            .into_text();
        assert_eq!(
            text,
            "SELECT -42 FROM t WHERE a = _utf8mb4 X'6F276B' AND b = NULL AND c = TRUE"
        );
    }

    #[test]
    fn bytes_are_hex_whatever_they_hold() {
        assert_eq!(literal(&b"\0'\\\xff"[..]), "X'00275CFF'");
        assert_eq!(literal(&b""[..]), "X''");
        assert_eq!(literal(""), "_utf8mb4 X''");
    }

    #[test]
    fn a_list_is_its_values_comma_separated() {
        assert_eq!(list([1_u64, 22, 333]), "1, 22, 333");
        assert_eq!(list(["a", "b"]), "_utf8mb4 X'61', _utf8mb4 X'62'");
        assert_eq!(list(Vec::<u64>::new()), "");
    }

    #[test]
    fn times_are_truncated_to_whole_milliseconds() {
        let at = |micro| {
            chrono::NaiveDate::from_ymd_opt(2026, 12, 31)
                .and_then(|d| d.and_hms_micro_opt(23, 59, 59, micro))
                .expect("a valid time")
        };
        assert_eq!(literal(at(120_003)), "TIMESTAMP'2026-12-31 23:59:59.120'");
        assert_eq!(literal(at(120_999)), "TIMESTAMP'2026-12-31 23:59:59.120'");
        assert_eq!(literal(at(999_600)), "TIMESTAMP'2026-12-31 23:59:59.999'");
        assert_eq!(literal(at(0)), "TIMESTAMP'2026-12-31 23:59:59.000'");
    }

    #[test]
    fn intervals_are_whole_milliseconds_in_microseconds() {
        let interval = |micros| literal(Interval(Duration::from_micros(micros)));
        assert_eq!(interval(1_500_999), "INTERVAL 1500000 MICROSECOND");
        assert_eq!(interval(999), "INTERVAL 0 MICROSECOND");
        assert_eq!(interval(0), "INTERVAL 0 MICROSECOND");
    }

    #[test]
    #[should_panic(expected = "left without a value")]
    fn a_placeholder_without_a_value_is_a_bug() {
        let _ = Sql::new("SELECT ?, ?").bind(1_u8).into_text();
    }

    #[test]
    #[should_panic(expected = "more values than")]
    fn a_value_without_a_placeholder_is_a_bug() {
        let _ = Sql::new("SELECT ?").bind(1_u8).bind(2_u8);
    }
}
