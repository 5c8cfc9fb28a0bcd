//! A connection lent by the pool ([`super::pool`]), what becomes of it when it is given back, and
//! the manager that opens, checks and replaces the pool's connections.

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection as _, Executor, MySql, Transaction};

use super::session::{self, Server};
use crate::config::SessionSetup;
use crate::server_errors::{self, Handling};

/// A connection unused this long is pinged before it is handed out. One used moments ago is
/// known good: its last statement succeeded.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);
/// Connections are replaced after this long, as sqlx's pool does by default.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long settling a given-back connection may take before it is closed.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// The first words of the debug builds' check of a connection being lent.
pub const LEND_CHECK: &str = "SELECT /* debug: lent outside a transaction? */";

/// A pooled connection and when it logged in (a successor replaces it after [`MAX_LIFETIME`]).
pub struct Pooled {
    pub(super) conn: MySqlConnection,
    opened: Instant,
}

/// Makes and checks the pool's connections.
pub struct Manager {
    /// Behind a lock so that rotated credentials reach the connections made after.
    pub(super) options: RwLock<MySqlConnectOptions>,
    pub(super) session: SessionSetup,
    /// [`MAX_LIFETIME`] unless told otherwise.
    pub(super) max_lifetime: Duration,
    /// Told when the server refused a login (1045): whoever keeps the credentials reads them again.
    pub(super) login_refused: tokio::sync::Notify,
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

/// What becomes of a connection when it is given back, from the best to the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Fate {
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

/// A connection taken from the [`super::pool::Pool`]; it goes back when dropped.
pub struct Connection {
    /// Present until dropped or closed.
    pub(super) object: Option<Object<Manager>>,
    /// What happens to it when it is given back; only ever gets worse.
    pub(super) fate: Fate,
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
    pub(super) fn conn(&mut self) -> &mut MySqlConnection {
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
    /// (MySQL lists a transaction in `innodb_trx` once it has touched InnoDB, and shows it only
    /// to a user with PROCESS; MariaDB's `@@in_transaction` is true from its BEGIN, and MariaDB
    /// is what the tests run on. Release builds send none of this.)
    #[cfg(debug_assertions)]
    pub(super) async fn assert_outside_any_transaction(&mut self) -> Result<(), sqlx::Error> {
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

impl Connection {
    /// Passes on the outcome of a statement sent on its own (its answer has been read): the
    /// connection is reusable again, unless the error says otherwise.
    pub(super) fn observe<T>(&mut self, outcome: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.fate = match &outcome {
            Ok(_) => Fate::Reusable,
            Err(err) => Fate::after(err, false),
        };
        outcome
    }
}
