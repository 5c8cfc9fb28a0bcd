//! The database connection pool: sqlx connections kept by `deadpool`, checked only when there is
//! a reason to doubt one.
//!
//! sqlx's own pool pings every connection on its way back in, so a request whose whole work is
//! one `CALL` costs two round trips. This pool sends nothing of its own on a healthy path:
//!
//! - a connection is pinged when it is taken after 10 s unused (a server, proxy
//!   or NAT may have dropped it meanwhile), and replaced once past [`MAX_LIFETIME`] (so rotated
//!   credentials reach every connection) — by a successor that has logged in already: if none
//!   can, the old one goes on;
//! - a connection on which a statement failed in a way that ends the session, or that found the
//!   server read-only (a failover), is closed instead of going back (`server_errors::TABLE` says
//!   which errors); after a read-only answer the idle ones are closed too;
//! - a connection whose state on the server is not known — work still queued (the ROLLBACK of a
//!   transaction dropped while open), an answer still due (a statement or a BEGIN cancelled
//!   mid-flight, when a request met its deadline), or a statement outside a transaction that
//!   failed (a stored procedure killed between its START TRANSACTION and COMMIT: MySQL runs no
//!   handler on a kill, so its transaction stays open) — is rolled back in the background before
//!   it is lent again, and closed if that fails. So no connection is ever lent inside a
//!   transaction, no transaction keeps its row locks until the connection's next use, and no one
//!   is handed another's answer (sqlx would read it off before the next command and report its
//!   error as that command's).
//!
//! Debug builds check every connection they lend (`@@in_transaction` on MariaDB,
//! `information_schema.innodb_trx` on MySQL) and panic on one inside a transaction; the query
//! starts with [`LEND_CHECK`], so that counting tools can tell it from the service's own work.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use deadpool::managed::{self, PoolError, QueueMode};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{TryFutureExt, TryStreamExt};
use sqlx::mysql::{MySqlConnectOptions, MySqlQueryResult, MySqlRow, MySqlStatement, MySqlTypeInfo};
use sqlx::{Connection as _, Describe, Either, Execute, Executor, MySql};

pub use super::connection::{Connection, LEND_CHECK, MAX_LIFETIME, Pooled, Tx};
use super::connection::{Fate, Manager};
use super::product_reads::ProductReads;
use crate::config::DEFAULT_PRODUCT_READ_MAX_AGE;
use crate::config::SessionSetup;
use crate::server_errors::{self, Handling};

/// How long a request waits for a connection — a free one, or a new one, retried with backoff
/// while the server refuses connections — before answering 503. The bound of an outage's
/// answers: a client (or API Gateway, which gives up after 29 s) hears "retry later" within ~3 s
/// instead of waiting on a database that is not there.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// The first and the longest pause between attempts to connect to a server that refuses.
const CONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// A pool of connections to one database, all set up alike, and this process's recent product
/// reads ([`ProductReads`]), which every write through the pool to a product forgets. Cheap to
/// clone (one shared pool).
#[derive(Clone)]
pub struct Pool {
    inner: managed::Pool<Manager>,
    product_reads: Arc<ProductReads>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.inner.status())
            .finish()
    }
}

impl Pool {
    /// A pool that connects on first use, up to `max_connections` at once.
    pub fn new(options: MySqlConnectOptions, max_connections: u32, session: SessionSetup) -> Self {
        Self::with_max_lifetime(options, max_connections, session, MAX_LIFETIME)
    }

    /// [`Pool::new`] whose connections are replaced after `max_lifetime` instead of
    /// [`MAX_LIFETIME`].
    pub fn with_max_lifetime(
        options: MySqlConnectOptions,
        max_connections: u32,
        session: SessionSetup,
        max_lifetime: Duration,
    ) -> Self {
        let manager = Manager {
            options: RwLock::new(options),
            session,
            max_lifetime,
            login_refused: tokio::sync::Notify::new(),
        };
        let inner = managed::Pool::builder(manager)
            .max_size(max_connections as usize)
            // The most recently used first: a burst's extra connections go idle together, and
            // the steady load runs on connections known good.
            .queue_mode(QueueMode::Lifo)
            .build()
            .expect("a pool without timeouts or hooks needs no runtime");
        Self {
            inner,
            product_reads: Arc::new(ProductReads::new(DEFAULT_PRODUCT_READ_MAX_AGE)),
        }
    }

    /// This pool with product reads answered from results at most `max_age` old (zero: every
    /// read queries).
    pub fn with_product_read_max_age(self, max_age: Duration) -> Self {
        Self {
            product_reads: Arc::new(ProductReads::new(max_age)),
            ..self
        }
    }

    pub fn product_reads(&self) -> &ProductReads {
        &self.product_reads
    }

    /// A connection of the pool: a free one, or a new one, or `PoolTimedOut` after
    /// [`ACQUIRE_TIMEOUT`].
    pub async fn acquire(&self) -> Result<Connection, sqlx::Error> {
        let take = async {
            let mut backoff = CONNECT_BACKOFF.0;
            loop {
                match self.inner.get().await {
                    Ok(object) => return Ok(object),
                    // A server that refuses connections may be restarting: try again until
                    // the deadline, as sqlx's pool does.
                    Err(PoolError::Backend(err)) if worth_connecting_again(&err) => {
                        tracing::debug!(error = %err, "could not connect; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(CONNECT_BACKOFF.1);
                    }
                    Err(PoolError::Backend(err)) => return Err(err),
                    Err(PoolError::Closed) => return Err(sqlx::Error::PoolClosed),
                    Err(err) => return Err(sqlx::Error::Configuration(err.to_string().into())),
                }
            }
        };
        #[cfg_attr(not(debug_assertions), allow(unused_mut))]
        let mut conn = match tokio::time::timeout(ACQUIRE_TIMEOUT, take).await {
            Ok(object) => Connection {
                object: Some(object?),
                fate: Fate::Reusable,
            },
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        #[cfg(debug_assertions)]
        conn.assert_outside_any_transaction().await?;
        Ok(conn)
    }

    /// Returns when a login was refused for its credentials (error 1045) since the last call:
    /// the moment to read a rotated secret again.
    pub async fn login_refused(&self) {
        self.inner.manager().login_refused.notified().await;
    }

    /// Credentials for the connections made from now on (a rotated secret).
    pub fn set_connect_options(&self, options: MySqlConnectOptions) {
        *self
            .inner
            .manager()
            .options
            .write()
            .unwrap_or_else(PoisonError::into_inner) = options;
    }

    /// True when no connection is out of the pool (nor being finished in the background).
    pub fn is_idle(&self) -> bool {
        let status = self.inner.status();
        status.available == status.size
    }

    /// Closes the idle connections politely and refuses every later `acquire`; a connection
    /// still out is closed when it comes back.
    pub async fn close(&self) {
        let idle = self.inner.retain(|_, _| false).removed;
        self.inner.close();
        for pooled in idle {
            if let Err(err) = pooled.conn.close().await {
                tracing::debug!(error = %err, "could not close a pooled connection politely");
            }
        }
    }
}

/// The server refused or dropped the connection, or has none free: it may accept a later one.
/// (A TLS or login failure will not change by trying again.)
fn worth_connecting_again(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(_))
        || server_errors::handling_of(err) == Some(Handling::RefusedForNow)
        || server_errors::number(err) == Some(1053)
}

/// Statements run on the pool directly, as with sqlx's pool: each takes a connection for itself
/// and gives it back (or closes it, when the statement broke it).
impl<'p> Executor<'p> for &'_ Pool {
    type Database = MySql;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<MySqlQueryResult, MySqlRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, MySql>,
    {
        let pool = self.clone();
        // Our results are a few rows: read them all, then give the connection back.
        Box::pin(
            async move {
                let mut conn = pool.acquire().await?;
                conn.fate = Fate::Unsettled;
                let results = conn.conn().fetch_many(query).try_collect::<Vec<_>>().await;
                let results = conn.observe(results)?;
                Ok(stream::iter(results.into_iter().map(Ok)))
            }
            .try_flatten_stream(),
        )
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<MySqlRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, MySql>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            conn.fate = Fate::Unsettled;
            let row = conn.conn().fetch_optional(query).await;
            conn.observe(row)
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [MySqlTypeInfo],
    ) -> BoxFuture<'e, Result<MySqlStatement<'q>, sqlx::Error>> {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            conn.fate = Fate::Unsettled;
            let statement = conn.conn().prepare_with(sql, parameters).await;
            conn.observe(statement)
        })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<MySql>, sqlx::Error>> {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            conn.fate = Fate::Unsettled;
            let description = conn.conn().describe(sql).await;
            conn.observe(description)
        })
    }
}
