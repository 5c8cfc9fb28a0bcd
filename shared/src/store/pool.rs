//! The database connection pool: sqlx connections kept by `deadpool`, checked only when there is
//! a reason to doubt one.
//!
//! sqlx's own pool pings every connection on its way back in, so a request whose whole work is
//! one `CALL` costs two round trips. This pool sends nothing of its own on a healthy path:
//!
//! - a connection is pinged when it is taken after [`PING_IF_IDLE_FOR`] unused (a server, proxy
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

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object, PoolError, QueueMode};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{TryFutureExt, TryStreamExt};
use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlQueryResult, MySqlRow, MySqlStatement, MySqlTypeInfo,
};
use sqlx::{
    ConnectOptions, Connection as _, Describe, Either, Execute, Executor, MySql, Transaction,
};

use super::session::{self, Server};
use crate::config::SessionSetup;
use crate::server_errors::{self, Handling};

/// How long a request waits for a connection — a free one, or a new one, retried with backoff
/// while the server refuses connections — before answering 503. The bound of an outage's
/// answers: a client (or API Gateway, which gives up after 29 s) hears "retry later" within ~3 s
/// instead of waiting on a database that is not there.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection unused this long is pinged before it is handed out. One used moments ago is
/// known good: its last statement succeeded.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);
/// Connections are replaced after this long, as sqlx's pool does by default.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long finishing a given-back connection's queued work may take before it is closed.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// The first and the longest pause between attempts to connect to a server that refuses.
const CONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// The first words of the debug builds' check of a connection being lent.
pub const LEND_CHECK: &str = "SELECT /* debug: lent outside a transaction? */";

/// A pooled connection and when it logged in (a successor replaces it after [`MAX_LIFETIME`]).
pub struct Pooled {
    conn: MySqlConnection,
    opened: Instant,
}

/// Makes and checks the pool's connections.
pub struct Manager {
    /// Behind a lock so that rotated credentials reach the connections made after.
    options: RwLock<MySqlConnectOptions>,
    session: SessionSetup,
    /// [`MAX_LIFETIME`] unless told otherwise.
    max_lifetime: Duration,
    /// Told when the server refused a login (1045): whoever keeps the credentials reads them again.
    login_refused: tokio::sync::Notify,
}

impl Manager {
    async fn open(&self) -> Result<MySqlConnection, sqlx::Error> {
        let options = self
            .options
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut conn = options.connect().await.inspect_err(|err| {
            if server_errors::handling_of(err) == Some(Handling::AccessDenied) {
                self.login_refused.notify_one();
            }
        })?;
        match self.session {
            SessionSetup::OnConnect => {
                let server = Server::of(&mut conn).await?;
                conn.execute(sqlx::raw_sql(&server.session_init())).await?;
            }
            SessionSetup::ByProxy => session::check(&mut conn).await?,
        }
        Ok(conn)
    }
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Pooled, sqlx::Error> {
        Ok(Pooled {
            conn: self.open().await?,
            opened: Instant::now(),
        })
    }

    async fn recycle(
        &self,
        pooled: &mut Pooled,
        metrics: &Metrics,
    ) -> managed::RecycleResult<sqlx::Error> {
        if pooled.opened.elapsed() >= self.max_lifetime {
            // The successor first: when it cannot log in (a password mid-rotation, a server
            // refusing connections), the old connection still works and goes on.
            match self.open().await {
                Ok(successor) => {
                    let old = std::mem::replace(&mut pooled.conn, successor);
                    pooled.opened = Instant::now();
                    if let Err(err) = old.close().await {
                        tracing::debug!(error = %err, "could not close a connection past its lifetime politely");
                    }
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not open a successor to a connection past its lifetime; keeping it");
                }
            }
        }
        // `last_used` counts from when the connection was last taken: at worst an early ping.
        if metrics.last_used() >= PING_IF_IDLE_FOR {
            pooled.conn.ping().await?;
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

/// What becomes of a connection when it is given back, from the best to the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    /// Straight back into the pool.
    Reusable,
    /// Its state on the server is not known: rolled back (and any answer still due read) first.
    Unsettled,
    /// Closed: its session is gone or unusable.
    Closed,
    /// Closed, and the pool's idle connections with it: they reach a server that is read-only.
    ClosedWithIdle,
}

impl Fate {
    /// What a failed statement says of the connection. Inside a transaction sqlx knows the
    /// transaction and `db::finish` rolls it back, so only what closes a connection matters there.
    fn after(err: &sqlx::Error, in_transaction: bool) -> Self {
        match server_errors::handling_of(err) {
            Some(Handling::EndsSession) => Self::Closed,
            Some(Handling::ReadOnly) => Self::ClosedWithIdle,
            _ if in_transaction => Self::Reusable,
            // A statement sent on its own failed on the server: a procedure it called may have
            // begun a transaction that no handler ended.
            _ if matches!(err, sqlx::Error::Database(_)) => Self::Unsettled,
            _ => Self::Reusable,
        }
    }
}

/// A connection taken from the [`Pool`]; it goes back when dropped.
pub struct Connection {
    /// Present until dropped or closed.
    object: Option<Object<Manager>>,
    /// What happens to it when it is given back; only ever gets worse.
    fate: Fate,
}

/// A transaction on a pooled [`Connection`]: sqlx's, which it derefs to, and the connection's
/// fate, which [`Tx::observe`] makes worse when an error inside the transaction says so.
pub struct Tx<'c> {
    tx: Transaction<'c, MySql>,
    fate: &'c mut Fate,
}

impl<'c> Tx<'c> {
    /// Closes the connection afterwards if `err` says its session is gone or read-only.
    pub fn observe(&mut self, err: &sqlx::Error) {
        *self.fate = (*self.fate).max(Fate::after(err, true));
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Self { tx, fate } = self;
        tx.commit()
            .await
            .inspect_err(|err| *fate = (*fate).max(Fate::after(err, true)))
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Self { tx, fate } = self;
        tx.rollback()
            .await
            .inspect_err(|err| *fate = (*fate).max(Fate::after(err, true)))
    }
}

impl<'c> std::ops::Deref for Tx<'c> {
    type Target = Transaction<'c, MySql>;
    fn deref(&self) -> &Transaction<'c, MySql> {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Connection {
    fn conn(&mut self) -> &mut MySqlConnection {
        &mut self
            .object
            .as_deref_mut()
            .expect("a pooled connection is present until dropped")
            .conn
    }

    /// Starts a transaction, which ends by `commit` or `rollback` (or, dropped, by a ROLLBACK
    /// the pool sends before the connection is used again).
    pub async fn begin(&mut self) -> Result<Tx<'_>, sqlx::Error> {
        let Self { object, fate } = self;
        let conn = &mut object
            .as_deref_mut()
            .expect("a pooled connection is present until dropped")
            .conn;
        // Cancelled before BEGIN's answer is read, the server may have begun a transaction
        // that sqlx does not know of: the connection is rolled back before its next use.
        let before = *fate;
        *fate = before.max(Fate::Unsettled);
        match conn.begin().await {
            Ok(tx) => {
                *fate = before;
                Ok(Tx { tx, fate })
            }
            Err(err) => {
                *fate = (*fate).max(Fate::after(&err, false));
                Err(err)
            }
        }
    }

    /// Closes the connection instead of giving it back (it carries settings of its own).
    pub async fn close(mut self) -> Result<(), sqlx::Error> {
        match self.object.take() {
            Some(object) => Object::take(object).conn.close().await,
            None => Ok(()),
        }
    }

    /// The debug builds' assertion: a connection is lent in autocommit, outside any transaction.
    #[cfg(debug_assertions)]
    async fn assert_outside_any_transaction(&mut self) -> Result<(), sqlx::Error> {
        use sqlx::Row;
        let mariadb =
            format!("{LEND_CHECK} CAST(@@autocommit AS SIGNED), CAST(@@in_transaction AS SIGNED)");
        let mysql = format!(
            "{LEND_CHECK} CAST(@@autocommit AS SIGNED), (SELECT COUNT(*) FROM \
             information_schema.innodb_trx WHERE trx_mysql_thread_id = CONNECTION_ID())"
        );
        self.fate = Fate::Unsettled;
        let row = match self.conn().fetch_one(mariadb.as_str()).await {
            // MySQL has no @@in_transaction (ER_UNKNOWN_SYSTEM_VARIABLE).
            Err(err) if server_errors::number(&err) == Some(1193) => {
                self.conn().fetch_one(mysql.as_str()).await
            }
            row => row,
        };
        // A connection that cannot answer (killed, cut) is lent as a release build would lend
        // it: its first statement meets the fault.
        let Ok(row) = row else {
            self.fate = Fate::Reusable;
            return Ok(());
        };
        self.fate = Fate::Reusable;
        let autocommit: i64 = row.try_get(0)?;
        let in_transaction: i64 = row.try_get(1)?;
        assert!(
            autocommit == 1 && in_transaction == 0,
            "the pool lent a connection inside a transaction (autocommit {autocommit}, \
             transactions open {in_transaction})"
        );
        Ok(())
    }
}

impl std::ops::Deref for Connection {
    type Target = MySqlConnection;
    fn deref(&self) -> &MySqlConnection {
        &self
            .object
            .as_deref()
            .expect("a pooled connection is present until dropped")
            .conn
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
        match self.fate {
            Fate::Reusable if !object.conn.should_flush() => {
                // Dropped here, `object` goes back into the pool.
            }
            Fate::Reusable | Fate::Unsettled => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(settle_then_give_back(object))),
                Err(_) => drop(Object::take(object)),
            },
            // Out of the pool; the pool makes a new one when it needs one.
            Fate::Closed => drop(Object::take(object)),
            Fate::ClosedWithIdle => {
                if let Some(pool) = Object::pool(&object) {
                    let closed = pool.retain(|_, _| false).removed.len();
                    tracing::warn!(
                        closed,
                        "the database answered read-only (a failover): closing the idle connections too"
                    );
                }
                drop(Object::take(object));
            }
        }
    }
}

/// Sends what a given-back connection has queued (a dropped transaction's ROLLBACK), reads the
/// answers still due (a cancelled command's), then ends whatever transaction the server may
/// still have open with a ROLLBACK of its own (a no-op outside one); the connection goes back to
/// the pool only if all of that worked.
async fn settle_then_give_back(mut object: Object<Manager>) {
    match tokio::time::timeout(FINISH_TIMEOUT, object.conn.execute("ROLLBACK")).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "a connection given back unsettled could not be rolled back; closed");
            drop(Object::take(object));
        }
        Err(_) => {
            tracing::warn!(timeout = ?FINISH_TIMEOUT, "a connection given back unsettled did not answer; closed");
            drop(Object::take(object));
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

impl Connection {
    /// Passes on the outcome of a statement sent on its own (its answer has been read): the
    /// connection is reusable again, unless the error says otherwise.
    fn observe<T>(&mut self, outcome: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.fate = match &outcome {
            Ok(_) => Fate::Reusable,
            Err(err) => Fate::after(err, false),
        };
        outcome
    }
}
