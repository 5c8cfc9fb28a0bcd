//! The one table of the database errors the service answers on purpose: MariaDB's, MySQL 8.0's
//! (Aurora MySQL 3 is MySQL 8.0), RDS Proxy's own, and the client library's, each with what it
//! means and what the service does with it. The pool (`store::pool`) reads it to decide whether a
//! connection may be used again; `error.rs` reads it to decide the HTTP status. A number not here
//! is a fault of ours (a bad query, a broken constraint): 500, logged with its cause.
//!
//! Sources: MySQL 8.0 Server Error Message Reference and Client Error Message Reference
//! (dev.mysql.com/doc/mysql-errors/8.0/en/), MariaDB's "MariaDB Error Codes"
//! (mariadb.com/kb/en/mariadb-error-codes/), and RDS Proxy's "Troubleshooting for RDS Proxy"
//! (docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy.troubleshooting.html) for 9501.

/// What the service does when a statement (or a login) meets the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// The session is gone although the server answered: the connection is closed, never lent
    /// again; the request answers 503 with `Retry-After`.
    EndsSession,
    /// The server is read-only (a failover left this connection on a reader, or the writer is
    /// being demoted): the connection is closed, and so are the idle ones (they reach the same
    /// server), so the next connection reaches the new writer; 503 with `Retry-After`.
    ReadOnly,
    /// The login was refused with these credentials: the pool asks for the credentials again
    /// (Secrets Manager on AWS: a rotated password), once per refusal, and answers 503 meanwhile.
    AccessDenied,
    /// No connection for now (too many, shutting down): connecting is tried again, with backoff,
    /// until the pool's acquire deadline; then 503 with `Retry-After`.
    RefusedForNow,
    /// A lock conflict: the whole transaction is run again a bounded number of times inside the
    /// operation (`store::db::retry_conflicts`), then 503 with `Retry-After`.
    Conflict,
    /// Not now, rather than wrong, and the session is still usable: 503 with `Retry-After` (the
    /// client retries; holds and webhooks are idempotent). The connection is rolled back before
    /// it is lent again, since a statement cut short may have left a transaction open.
    Transient,
    /// The request itself is at fault, and the code that sent it answers it (a duplicate
    /// `Idempotency-Key` becomes a replay, say): the connection is kept.
    Answered,
}

/// One row of the table.
#[derive(Debug)]
pub struct ServerError {
    pub number: u16,
    pub name: &'static str,
    /// Which servers send it: "MySQL", "MariaDB", "both", "RDS Proxy", "client".
    pub from: &'static str,
    pub meaning: &'static str,
    pub handling: Handling,
}

const fn row(
    number: u16,
    name: &'static str,
    from: &'static str,
    meaning: &'static str,
    handling: Handling,
) -> ServerError {
    ServerError {
        number,
        name,
        from,
        meaning,
        handling,
    }
}

use Handling::*;

pub const ER_DUP_ENTRY: u16 = 1062;
pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
pub const ER_LOCK_DEADLOCK: u16 = 1213;
pub const ER_ACCESS_DENIED: u16 = 1045;
pub const ER_LOCK_NOWAIT: u16 = 3572;

pub const TABLE: &[ServerError] = &[
    row(
        1040,
        "ER_CON_COUNT_ERROR",
        "both",
        "too many connections (max_connections)",
        RefusedForNow,
    ),
    row(
        1203,
        "ER_TOO_MANY_USER_CONNECTIONS",
        "both",
        "the user's max_user_connections reached",
        RefusedForNow,
    ),
    row(
        ER_ACCESS_DENIED,
        "ER_ACCESS_DENIED_ERROR",
        "both",
        "login refused: wrong user or password (a rotated secret)",
        AccessDenied,
    ),
    row(
        1053,
        "ER_SERVER_SHUTDOWN",
        "both",
        "the server is shutting down",
        EndsSession,
    ),
    row(
        ER_DUP_ENTRY,
        "ER_DUP_ENTRY",
        "both",
        "a unique key is taken (an Idempotency-Key, a payment event)",
        Answered,
    ),
    row(
        ER_LOCK_WAIT_TIMEOUT,
        "ER_LOCK_WAIT_TIMEOUT",
        "both",
        "a row lock was not granted within innodb_lock_wait_timeout",
        Conflict,
    ),
    row(
        ER_LOCK_DEADLOCK,
        "ER_LOCK_DEADLOCK",
        "both",
        "InnoDB chose this transaction as a deadlock's victim and rolled it back",
        Conflict,
    ),
    row(
        1290,
        "ER_OPTION_PREVENTS_STATEMENT",
        "both",
        "--read-only (or super_read_only): a failover left the connection on a reader",
        ReadOnly,
    ),
    row(
        1317,
        "ER_QUERY_INTERRUPTED",
        "both",
        "the statement was killed (KILL QUERY; on MySQL also the last word of a KILL CONNECTION); MySQL runs no stored-program handler on a kill, so a procedure's transaction may be left open",
        Transient,
    ),
    row(
        1836,
        "ER_READ_ONLY_MODE",
        "both",
        "the server is in read-only mode (Aurora during failover)",
        ReadOnly,
    ),
    row(
        1927,
        "ER_CONNECTION_KILLED",
        "MariaDB",
        "the connection was killed (KILL CONNECTION); MySQL has no such number",
        EndsSession,
    ),
    row(
        1969,
        "ER_STATEMENT_TIMEOUT",
        "MariaDB",
        "max_statement_time exceeded",
        Transient,
    ),
    row(
        3024,
        "ER_QUERY_TIMEOUT",
        "MySQL",
        "max_execution_time exceeded (MySQL bounds read-only SELECTs only)",
        Transient,
    ),
    row(
        4031,
        "ER_CLIENT_INTERACTION_TIMEOUT",
        "MySQL",
        "the server closed the connection as idle (wait_timeout)",
        EndsSession,
    ),
    row(
        2006,
        "CR_SERVER_GONE_ERROR",
        "client",
        "the server went away (a client library's code, relayed)",
        EndsSession,
    ),
    row(
        2013,
        "CR_SERVER_LOST",
        "client",
        "the connection was lost during a query (a client library's code, relayed)",
        EndsSession,
    ),
    row(
        9501,
        "Timed-out waiting to acquire database connection",
        "RDS Proxy",
        "the proxy could not borrow a database connection within ConnectionBorrowTimeout; the statement never ran",
        Transient,
    ),
];

/// What the service does about server error `number`; `None` for one not in the table.
pub fn handling(number: u16) -> Option<Handling> {
    TABLE
        .iter()
        .find(|error| error.number == number)
        .map(|error| error.handling)
}

/// A connection whose session is not the one the service needs (`store::session::check`): behind
/// RDS Proxy, the proxy's `InitQuery` did not run, or says something else. Such a connection is
/// not used: at the server's default REPEATABLE READ a failed conditional UPDATE keeps its gap
/// and row locks (deadlocks between holds), and a lock wait lasts 50 s, past every request's
/// deadline. 503, like the other faults of the database's setup.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database session is at {isolation} with a {lock_wait_seconds} s lock wait, not \
     READ-COMMITTED and {needed_lock_wait_seconds} s: the InitQuery of the RDS Proxy target \
     group (template.yaml) must set them"
)]
pub struct SessionRefused {
    pub(crate) isolation: String,
    pub(crate) lock_wait_seconds: u64,
    pub(crate) needed_lock_wait_seconds: u32,
}

impl SessionRefused {
    pub fn is(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Configuration(inner) if inner.downcast_ref::<Self>().is_some())
    }
}

/// The MySQL error number of a server's error answer, if `err` is one.
pub fn number(err: &sqlx::Error) -> Option<u16> {
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(|db| db.number())
}

/// What the service does about `err`, whatever produced it. Losing the socket (I/O, a protocol
/// error mid-answer, TLS) ends the session as surely as the server saying so.
pub fn handling_of(err: &sqlx::Error) -> Option<Handling> {
    match err {
        sqlx::Error::Database(_) => number(err).and_then(handling),
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => Some(EndsSession),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_the_service_must_know_is_in_the_table_once() {
        let required = [
            1040, 1045, 1053, 1205, 1213, 1290, 1317, 1836, 1927, 1969, 2006, 2013, 3024, 4031,
            9501,
        ];
        for number in required {
            assert_eq!(
                TABLE.iter().filter(|row| row.number == number).count(),
                1,
                "{number}"
            );
        }
    }

    #[test]
    fn a_failover_and_a_killed_session_close_the_connection_and_a_timeout_keeps_it() {
        assert_eq!(handling(1290), Some(ReadOnly));
        assert_eq!(handling(1836), Some(ReadOnly));
        assert_eq!(handling(1927), Some(EndsSession));
        assert_eq!(handling(4031), Some(EndsSession));
        assert_eq!(handling(3024), Some(Transient));
        assert_eq!(handling(9501), Some(Transient));
        assert_eq!(
            handling(4025),
            None,
            "a CHECK constraint broken is a bug of ours"
        );
    }
}
