//! Connecting, creating and migrating the database, and retrying transactions that lost a lock race.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::error::Error;

/// A lock wait longer than this is a fault, not contention: fail the statement and retry or 503.
const LOCK_WAIT_TIMEOUT_SECONDS: u32 = 5;
/// How long a request waits for a pooled connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an instance waits for another one's migration before giving up.
const MIGRATION_LOCK_WAIT_SECONDS: u32 = 120;
/// Deadlocks and lock-wait timeouts are retried this many times inside the operation.
const MAX_CONFLICT_RETRIES: u32 = 5;

pub fn connect_options(database_url: &SecretString) -> Result<MySqlConnectOptions, Error> {
    let options = MySqlConnectOptions::from_str(database_url.expose_secret())
        .map_err(|err| Error::Config(format!("DATABASE_URL is not a valid MySQL URL: {err}")))?;
    // Statement logging would put every query (and its timing) in the logs at INFO.
    Ok(options.disable_statement_logging())
}

/// A pool whose every connection runs at READ COMMITTED with a bounded lock wait.
///
/// READ COMMITTED: correctness comes from row locks and conditional updates, never from snapshot
/// repeatability, and it spares us REPEATABLE READ's gap locks on the holds indexes, which would
/// make inserts of new holds wait behind the sweeper's range scans.
pub fn pool_options(max_connections: u32) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                conn.execute(
                    format!("SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT_SECONDS}")
                        .as_str(),
                )
                .await?;
                Ok(())
            })
        })
}

pub async fn connect(
    database_url: &SecretString,
    max_connections: u32,
) -> Result<MySqlPool, Error> {
    let options = connect_options(database_url)?;
    Ok(pool_options(max_connections).connect_with(options).await?)
}

/// Creates the database named in the URL when it does not exist yet (the local server and tests).
pub async fn create_database_if_missing(database_url: &SecretString) -> Result<(), Error> {
    let options = connect_options(database_url)?;
    let name = options
        .get_database()
        .ok_or_else(|| Error::Config("DATABASE_URL must name a database".into()))?
        .to_owned();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Error::Config(format!(
            "database name {name:?} must be letters, digits and underscores"
        )));
    }
    // information_schema exists on every MySQL and MariaDB server, so we can connect before ours does.
    let mut conn = options.database("information_schema").connect().await?;
    conn.execute(format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4").as_str())
        .await?;
    conn.close().await?;
    Ok(())
}

/// Applies `migrations/`, once, however many instances start together against one database.
///
/// sqlx serialises migrators with `GET_LOCK(…, -1)`, which MySQL 8 takes as "wait forever" but
/// MariaDB answers at once with NULL, holding no lock: so we take a lock of our own, with a
/// bounded wait, on the connection the migrator then uses.
pub async fn migrate(pool: &MySqlPool) -> Result<(), Error> {
    const LOCK: &str = "CONCAT('flash-sale-migrate:', DATABASE())";
    let mut conn = pool.acquire().await?;
    let locked: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT CAST(GET_LOCK({LOCK}, {MIGRATION_LOCK_WAIT_SECONDS}) AS SIGNED)"
    ))
    .fetch_one(&mut *conn)
    .await?;
    if locked != Some(1) {
        return Err(Error::Internal(format!(
            "another instance held the migration lock for over {MIGRATION_LOCK_WAIT_SECONDS} s"
        )));
    }
    let migrated = sqlx::migrate!("../migrations").run(&mut *conn).await;
    sqlx::query(&format!("DO RELEASE_LOCK({LOCK})"))
        .execute(&mut *conn)
        .await?;
    migrated?;
    Ok(())
}

/// Runs a whole transaction again when it lost a deadlock or timed out waiting for a lock,
/// a bounded number of times with jittered backoff; any other outcome is returned as it is.
pub(crate) async fn retry_conflicts<T, F, Fut>(
    operation: &'static str,
    mut run: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 0;
    loop {
        match run().await {
            Err(err) if err.is_retryable_conflict() && attempt < MAX_CONFLICT_RETRIES => {
                attempt += 1;
                let backoff = Duration::from_millis(fastrand::u64(1..=10 * u64::from(attempt)));
                tracing::warn!(operation, attempt, error = %err, "lock conflict; retrying transaction");
                tokio::time::sleep(backoff).await;
            }
            outcome => return outcome,
        }
    }
}

/// A Lambda container's pool: one connection (a container serves one request at a time),
/// opened on first use so a database that is briefly down makes requests answer 503 instead
/// of failing the container's start.
pub fn lambda_pool(config: &crate::Config) -> Result<MySqlPool, Error> {
    let max = config
        .database_max_connections
        .unwrap_or(crate::config::LAMBDA_CONNECTIONS);
    Ok(pool_options(max).connect_lazy_with(connect_options(&config.database_url)?))
}
