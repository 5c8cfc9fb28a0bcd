//! What every request connection's session is told, and how each server spells it.

use std::time::Duration;

use sqlx::mysql::MySqlConnection;
use sqlx::{Executor, Row};

use crate::server_errors::SessionRefused;

/// A lock wait longer than this is a fault, not contention: fail the statement and retry or 503.
/// Row locks (`innodb_lock_wait_timeout`) and metadata locks (`lock_wait_timeout`) alike.
const LOCK_WAIT_TIMEOUT_SECONDS: u32 = 5;
/// The server stops any statement running longer than this: a runaway query must not hold a
/// connection (and its locks) for minutes. Twice the lock wait, so a statement waiting on a lock
/// ends as a lock-wait timeout, which is retried, rather than as a statement timeout, which is not.
/// MariaDB bounds every statement (`max_statement_time`), MySQL 8 only read-only SELECTs
/// (`max_execution_time`); there writes are bounded by the lock waits alone.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The two servers name their statement timeout differently (and MySQL rejects MariaDB's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    MariaDb,
    MySql,
}

impl Server {
    pub async fn of(conn: &mut MySqlConnection) -> Result<Self, sqlx::Error> {
        let version: String = conn.fetch_one("SELECT VERSION()").await?.try_get(0)?;
        Ok(Self::from_version(&version))
    }

    /// `10.11.6-MariaDB-0+deb12u1`, `8.0.36`, `8.0.mysql_aurora.3.05.2`.
    fn from_version(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") {
            Self::MariaDb
        } else {
            Self::MySql
        }
    }

    /// Every request connection's session: READ COMMITTED, lock waits and statements bounded.
    ///
    /// READ COMMITTED: correctness comes from row locks and conditional updates, never from
    /// snapshot repeatability, and it spares us REPEATABLE READ's gap locks on the holds indexes,
    /// which would make inserts of new holds wait behind the sweeper's range scans.
    /// Behind RDS Proxy this is the target group's `InitQuery` (template.yaml holds the MySQL
    /// text, and a test checks it is this one); elsewhere the pool sends it on connect.
    pub fn session_init(self) -> String {
        format!(
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; {}",
            self.session_timeouts(LOCK_WAIT_TIMEOUT_SECONDS, STATEMENT_TIMEOUT)
        )
    }

    /// The session's lock waits and statement time limit; a zero `statement` means none.
    pub(crate) fn session_timeouts(self, lock_wait_seconds: u32, statement: Duration) -> String {
        let statement = match self {
            Self::MariaDb => format!("max_statement_time = {}", statement.as_secs_f64()),
            Self::MySql => format!("max_execution_time = {}", statement.as_millis()),
        };
        format!(
            "SET SESSION innodb_lock_wait_timeout = {lock_wait_seconds}, \
             lock_wait_timeout = {lock_wait_seconds}, {statement}"
        )
    }
}

/// Checks, with one statement, that a connection set up by someone else (RDS Proxy's
/// InitQuery) runs at the isolation level and lock wait the service needs; logs an error naming
/// the InitQuery and refuses the connection otherwise. `SHOW SESSION VARIABLES` needs no
/// privilege on either server, sets nothing (so it does not pin a proxy connection) and names no
/// `@@` variable, and covers both spellings: MySQL 8's `transaction_isolation`, and MariaDB's
/// `tx_isolation` (before 11.1 its only one, and a name MySQL 8 dropped).
pub async fn check(conn: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    let rows = conn
        .fetch_all(
            "SHOW SESSION VARIABLES WHERE Variable_name IN \
             ('transaction_isolation', 'tx_isolation', 'innodb_lock_wait_timeout')",
        )
        .await?;
    let mut isolation = String::from("an unknown isolation level");
    let mut lock_wait_seconds = 0;
    for row in rows {
        let name: String = row.try_get(0)?;
        let value: String = row.try_get(1)?;
        match name.to_ascii_lowercase().as_str() {
            "innodb_lock_wait_timeout" => lock_wait_seconds = value.parse().unwrap_or(0),
            _ => isolation = value,
        }
    }
    if isolation.eq_ignore_ascii_case("READ-COMMITTED")
        && lock_wait_seconds == u64::from(LOCK_WAIT_TIMEOUT_SECONDS)
    {
        return Ok(());
    }
    let refused = SessionRefused {
        isolation,
        lock_wait_seconds,
        needed_lock_wait_seconds: LOCK_WAIT_TIMEOUT_SECONDS,
    };
    tracing::error!(error = %refused, "a database connection was refused");
    Err(sqlx::Error::Configuration(Box::new(refused)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_told_apart_by_its_version() {
        assert_eq!(
            Server::from_version("10.11.6-MariaDB-0+deb12u1"),
            Server::MariaDb
        );
        assert_eq!(Server::from_version("8.0.36"), Server::MySql);
        assert_eq!(
            Server::from_version("8.0.mysql_aurora.3.05.2"),
            Server::MySql
        );
    }

    #[test]
    fn each_server_gets_its_own_statement_timeout_in_its_own_unit() {
        let mariadb = Server::MariaDb.session_timeouts(5, Duration::from_secs(10));
        assert!(
            mariadb.contains("innodb_lock_wait_timeout = 5"),
            "{mariadb}"
        );
        assert!(mariadb.contains("max_statement_time = 10"), "{mariadb}");
        let mysql = Server::MySql.session_timeouts(5, Duration::from_secs(10));
        assert!(mysql.contains("max_execution_time = 10000"), "{mysql}");
        assert!(
            Server::MySql
                .session_timeouts(120, Duration::ZERO)
                .ends_with("max_execution_time = 0")
        );
        assert!(STATEMENT_TIMEOUT.as_secs() >= 2 * u64::from(LOCK_WAIT_TIMEOUT_SECONDS));
    }
}
