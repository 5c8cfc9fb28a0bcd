//! Connecting, creating and migrating the database, and retrying transactions that lost a lock race.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use super::pool::{Pool, Tx};
use super::session::Server;
pub use crate::config::SessionSetup;
use crate::error::Error;

/// How long an instance waits for another one's migration before giving up.
const MIGRATION_LOCK_WAIT_SECONDS: u32 = 120;
/// Deadlocks and lock-wait timeouts are retried this many times inside the operation…
const MAX_CONFLICT_RETRIES: u32 = 5;
/// …but no new attempt starts once the operation has run this long: five lock-wait timeouts in a
/// row would otherwise keep a request for over 25 s, past what a client waits.
const CONFLICT_RETRY_BUDGET: Duration = Duration::from_secs(10);

pub fn connect_options(database_url: &SecretString) -> Result<MySqlConnectOptions, Error> {
    let options = MySqlConnectOptions::from_str(database_url.expose_secret())
        .map_err(|err| Error::Config(format!("DATABASE_URL is not a valid MySQL URL: {err}")))?;
    Ok(tuned(options))
}

/// What every connection of ours is told, however its address and credentials were found.
///
/// Statement logging would put every query (and its timing) in the logs at INFO. sqlx's own
/// `SET` on connect then names only variables RDS Proxy tracks (`time_zone`, `NAMES`), so it
/// does not pin: its default also appends to `sql_mode` through a subquery on `@@sql_mode`, for
/// `PIPES_AS_CONCAT` (we never concatenate with `||`) and `NO_ENGINE_SUBSTITUTION` (in both
/// servers' default modes already).
pub fn tuned(options: MySqlConnectOptions) -> MySqlConnectOptions {
    options
        .disable_statement_logging()
        .pipes_as_concat(false)
        .no_engine_substitution(false)
}

/// A pool on `database_url` that has made its first connection (so a wrong URL fails here).
pub async fn connect(database_url: &SecretString, max_connections: u32) -> Result<Pool, Error> {
    let pool = Pool::new(
        connect_options(database_url)?,
        max_connections,
        SessionSetup::OnConnect,
    );
    drop(pool.acquire().await?);
    Ok(pool)
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

/// The schema this code runs on: `migrations/`, embedded.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Applies `migrations/`, once, however many instances start together against one database.
///
/// sqlx serialises migrators with `GET_LOCK(…, -1)`, which MySQL 8 takes as "wait forever" but
/// MariaDB answers at once with NULL, holding no lock: so we take a lock of our own, with a
/// bounded wait, on the connection the migrator then uses. That connection lifts the pool's
/// statement and lock-wait limits (waiting for the lock and altering a table may take long), so
/// it is closed afterwards instead of going back to the pool.
pub async fn migrate(pool: &Pool) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    let migrated = migrate_on(&mut conn).await;
    if let Err(err) = conn.close().await {
        tracing::warn!(error = %err, "could not close the migration connection");
    }
    migrated
}

/// The name of the lock that serialises migrations of `database`. MySQL 8 refuses a lock name
/// over 64 characters and a database name may have 64, so the name carries 128 bits of the
/// name's SHA-256 instead: 51 characters, one lock per database.
pub fn migration_lock_name(database: &str) -> String {
    let digest = Sha256::digest(database.as_bytes());
    format!("flash-sale-migrate:{}", hex::encode(&digest[..16]))
}

async fn migrate_on(conn: &mut MySqlConnection) -> Result<(), Error> {
    let database: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut *conn)
        .await?;
    let database = database.ok_or_else(|| {
        Error::Config(
            "the connection names no database: DATABASE_URL (or DATABASE_NAME) must name one"
                .into(),
        )
    })?;
    let lock = migration_lock_name(&database);
    let server = Server::of(conn).await?;
    conn.execute(
        server
            .session_timeouts(MIGRATION_LOCK_WAIT_SECONDS, Duration::ZERO)
            .as_str(),
    )
    .await?;
    let locked: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT CAST(GET_LOCK(?, {MIGRATION_LOCK_WAIT_SECONDS}) AS SIGNED)"
    ))
    .bind(&lock)
    .fetch_one(&mut *conn)
    .await?;
    if locked != Some(1) {
        return Err(Error::Internal(format!(
            "another instance held the migration lock for over {MIGRATION_LOCK_WAIT_SECONDS} s"
        )));
    }
    let migrated = MIGRATOR.run(&mut *conn).await;
    sqlx::query("DO RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut *conn)
        .await?;
    migrated?;
    Ok(())
}

/// Runs a whole transaction again when it lost a deadlock or timed out waiting for a lock,
/// a bounded number of times with jittered backoff and only within [`CONFLICT_RETRY_BUDGET`];
/// any other outcome is returned as it is.
pub(crate) async fn retry_conflicts<T, F, Fut>(
    operation: &'static str,
    mut run: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    loop {
        match run().await {
            Err(err)
                if err.is_retryable_conflict()
                    && attempt < MAX_CONFLICT_RETRIES
                    && started.elapsed() < CONFLICT_RETRY_BUDGET =>
            {
                attempt += 1;
                let backoff = Duration::from_millis(fastrand::u64(1..=10 * u64::from(attempt)));
                tracing::warn!(operation, attempt, error = %err, "lock conflict; retrying transaction");
                tokio::time::sleep(backoff).await;
            }
            outcome => return outcome,
        }
    }
}

/// Ends a transaction by what its work returned: commits an `Ok`, and rolls an `Err` back
/// explicitly, awaiting the server's answer. Every transaction ends here. Dropping an open sqlx
/// transaction only queues its ROLLBACK, which the pool sends from a background task: a Lambda
/// container frozen right after answering would not run it, and would keep the transaction's row
/// locks until it thaws, blocking every other container.
pub(crate) async fn finish<T>(mut tx: Tx<'_>, result: Result<T, Error>) -> Result<T, Error> {
    if let Err(Error::Database(err)) = &result {
        tx.observe(err);
    }
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "could not roll back; the connection is dropped");
            }
            Err(err)
        }
    }
}

/// A Lambda container's pool: one connection (a container serves one request at a time),
/// opened on first use so a database that is briefly down makes requests answer 503 instead
/// of failing the container's start. `shared::adapters::lambda_pool` picks the options: the
/// database secret's, or `DATABASE_URL`'s.
pub fn lazy_pool(config: &crate::Config, options: MySqlConnectOptions) -> Pool {
    let max = config
        .database
        .max_connections
        .unwrap_or(crate::config::LAMBDA_CONNECTIONS);
    Pool::new(options, max, config.database.session)
        .with_product_read_max_age(config.database.product_read_max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_lock_name_fits_mysqls_64_characters_for_any_database_name() {
        // A database name may be 64 characters, of any script.
        for database in ["flash_sale", &"d".repeat(64), &"д".repeat(64)] {
            let lock = migration_lock_name(database);
            assert!(lock.chars().count() <= 64, "{lock} is over 64 characters");
            assert!(lock.starts_with("flash-sale-migrate:"), "{lock}");
            assert_eq!(lock, migration_lock_name(database), "always the same");
        }
        let similar = ["shop", "Shop", "shop_", &"d".repeat(64), &"d".repeat(63)];
        let locks: std::collections::HashSet<String> =
            similar.iter().map(|db| migration_lock_name(db)).collect();
        assert_eq!(locks.len(), similar.len(), "one lock per database");
    }
}
