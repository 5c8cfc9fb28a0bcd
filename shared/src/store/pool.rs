//! The database connection pool: sqlx connections kept by `deadpool`, checked only when there is
//! a reason to doubt one.
//!
//! sqlx's own pool pings every connection on its way back in, so a request whose whole work is
//! one `CALL` costs two round trips. This pool sends nothing of its own on a healthy path:
//!
//! - a connection is pinged when it is taken after [`PING_IF_IDLE_FOR`] unused (a server, proxy
//!   or NAT may have dropped it meanwhile), and replaced once past [`MAX_LIFETIME`] (so rotated
//!   credentials reach every connection);
//! - a connection on which a statement failed other than by the server's own error answer (I/O,
//!   protocol, a killed session) is closed instead of going back;
//! - a connection given back with work still queued (the ROLLBACK of a transaction dropped while
//!   open) or an answer still due (a statement cancelled mid-flight, when a request met its
//!   deadline) is finished and pinged in the background first, and closed if that fails — so no
//!   transaction keeps its row locks until the connection's next use, and no one is handed
//!   another's answer (sqlx would read it off before the next command and report its error as
//!   that command's).
//!
//! Inside a transaction every cancellation leaves a ROLLBACK queued (sqlx's `Transaction` drop),
//! so only the pool's own statements and `begin` need to track what is in flight.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, QueueMode, RecycleError};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{TryFutureExt, TryStreamExt};
use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlQueryResult, MySqlRow, MySqlStatement, MySqlTypeInfo,
};
use sqlx::{
    ConnectOptions, Connection as _, Describe, Either, Execute, Executor, MySql, Transaction,
};

use super::session::Server;
use crate::config::SessionSetup;
use crate::error::mysql_error_number;

/// How long a request waits for a connection — a free one, or a new one, retried with backoff
/// while the server refuses connections — before answering 503. The bound of an outage's
/// answers: a client (or API Gateway, which gives up after 29 s) hears "retry later" within ~3 s
/// instead of waiting on a database that is not there.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection unused this long is pinged before it is handed out. One used moments ago is
/// known good: its last statement succeeded.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);
/// Connections are replaced after this long, as sqlx's pool does by default.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long finishing a given-back connection's queued work may take before it is closed.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// The first and the longest pause between attempts to connect to a server that refuses.
const CONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// Server error numbers that refuse a connection for now: too many connections (all, or the
/// user's), shutting down.
const REFUSED_FOR_NOW: &[u16] = &[1040, 1203, 1053];
/// Server error numbers that end the session: the connection is gone even though the server
/// answered (MariaDB's "connection killed", MySQL's idle disconnect, shutdown, lost).
const SESSION_ENDED: &[u16] = &[1927, 4031, 1053, 2006, 2013];

/// Makes and checks the pool's connections.
pub struct Manager {
    /// Behind a lock so that rotated credentials reach the connections made after.
    options: RwLock<MySqlConnectOptions>,
    session: SessionSetup,
}

impl managed::Manager for Manager {
    type Type = MySqlConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<MySqlConnection, sqlx::Error> {
        let options = self
            .options
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut conn = options.connect().await?;
        if self.session == SessionSetup::OnConnect {
            let server = Server::of(&mut conn).await?;
            conn.execute(sqlx::raw_sql(&server.session_init())).await?;
        }
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut MySqlConnection,
        metrics: &Metrics,
    ) -> managed::RecycleResult<sqlx::Error> {
        if metrics.age() >= MAX_LIFETIME {
            return Err(RecycleError::message("past its lifetime"));
        }
        // `last_used` counts from when the connection was last taken: at worst an early ping.
        if metrics.last_used() >= PING_IF_IDLE_FOR {
            conn.ping().await?;
        }
        Ok(())
    }
}

/// A pool of connections to one database, all set up alike. Cheap to clone (one shared pool).
#[derive(Clone)]
pub struct Pool {
    inner: managed::Pool<Manager>,
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
        let manager = Manager {
            options: RwLock::new(options),
            session,
        };
        let inner = managed::Pool::builder(manager)
            .max_size(max_connections as usize)
            // The most recently used first: a burst's extra connections go idle together, and
            // the steady load runs on connections known good.
            .queue_mode(QueueMode::Lifo)
            .build()
            .expect("a pool without timeouts or hooks needs no runtime");
        Self { inner }
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
        match tokio::time::timeout(ACQUIRE_TIMEOUT, take).await {
            Ok(object) => Ok(Connection {
                object: Some(object?),
                broken: false,
                in_flight: false,
            }),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
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
        for conn in idle {
            if let Err(err) = conn.close().await {
                tracing::debug!(error = %err, "could not close a pooled connection politely");
            }
        }
    }
}

/// A connection taken from the [`Pool`]; it goes back when dropped.
pub struct Connection {
    /// Present until dropped or closed.
    object: Option<Object<Manager>>,
    /// A statement failed in a way that may have left the session unusable.
    broken: bool,
    /// A command was sent and its answer not yet read: dropped now (a request cancelled at its
    /// deadline), the answer — perhaps an error — would meet the next user's first command.
    in_flight: bool,
}

impl Connection {
    fn conn(&mut self) -> &mut MySqlConnection {
        self.object
            .as_deref_mut()
            .expect("a pooled connection is present until dropped")
    }

    /// Starts a transaction, which ends by `commit` or `rollback` (or, dropped, by a ROLLBACK
    /// the pool sends before the connection is used again).
    pub async fn begin(&mut self) -> Result<Transaction<'_, MySql>, sqlx::Error> {
        let Self {
            object,
            broken,
            in_flight,
        } = self;
        let conn = object
            .as_deref_mut()
            .expect("a pooled connection is present until dropped");
        *in_flight = true;
        let begun = conn.begin().await;
        *in_flight = false;
        begun.inspect_err(|err| *broken |= ends_session(err))
    }

    /// Closes the connection instead of giving it back (it carries settings of its own).
    pub async fn close(mut self) -> Result<(), sqlx::Error> {
        match self.object.take() {
            Some(object) => Object::take(object).close().await,
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for Connection {
    type Target = MySqlConnection;
    fn deref(&self) -> &MySqlConnection {
        self.object
            .as_deref()
            .expect("a pooled connection is present until dropped")
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut MySqlConnection {
        self.conn()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        if self.broken {
            // Out of the pool; the pool makes a new one when it needs one.
            drop(Object::take(object));
        } else if self.in_flight || object.should_flush() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(finish_then_give_back(object))),
                Err(_) => drop(Object::take(object)),
            }
        }
        // Otherwise `object` is dropped here, which puts it back in the pool.
    }
}

/// Sends what a given-back connection has queued (a dropped transaction's ROLLBACK), reads the
/// answers still due (a cancelled command's) and pings; the connection goes back to the pool only
/// if all of that worked.
async fn finish_then_give_back(mut object: Object<Manager>) {
    match tokio::time::timeout(FINISH_TIMEOUT, object.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "a connection given back with queued work failed; closed");
            drop(Object::take(object));
        }
        Err(_) => {
            tracing::warn!(timeout = ?FINISH_TIMEOUT, "a connection given back with queued work did not answer; closed");
            drop(Object::take(object));
        }
    }
}

/// The server refused or dropped the connection, or has none free: it may accept a later one.
/// (A TLS or login failure will not change by trying again.)
fn worth_connecting_again(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(_))
        || mysql_error_number(err).is_some_and(|number| REFUSED_FOR_NOW.contains(&number))
}

/// False only for the server's own error answers that leave the session as it was (a duplicate
/// key, a lock-wait timeout, a statement stopped by its time limit…).
fn ends_session(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(_) => {
            mysql_error_number(err).is_some_and(|number| SESSION_ENDED.contains(&number))
        }
        _ => true,
    }
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
                conn.in_flight = true;
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
            conn.in_flight = true;
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
            conn.in_flight = true;
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
            conn.in_flight = true;
            let description = conn.conn().describe(sql).await;
            conn.observe(description)
        })
    }
}

impl Connection {
    /// Passes a statement's outcome on (its answer has been read), marking the connection broken
    /// when the error says so.
    fn observe<T>(&mut self, outcome: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.in_flight = false;
        if let Err(err) = &outcome {
            self.broken |= ends_session(err);
        }
        outcome
    }
}
