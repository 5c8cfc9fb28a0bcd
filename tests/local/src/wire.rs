//! Database traffic counted on the wire: a TCP proxy in front of a MySQL or MariaDB server that
//! forwards every byte both ways unchanged and counts the commands clients send through it.
//!
//! ```text
//! WireCounter::start(upstream: SocketAddr) -> io::Result<WireCounter>   listens on 127.0.0.1:0
//! WireCounter::in_front_of(database_url: &str) -> io::Result<WireCounter>   the URL's server
//! WireCounter::url(&self, database_url: &str) -> String   the same URL, through the proxy
//! WireCounter::addr(&self) -> SocketAddr
//! WireCounter::snapshot(&self) -> WireCounts   counts since the start or the last take
//! WireCounter::take(&self) -> WireCounts       the same, and starts counting afresh
//! pinning(query: &str) -> Option<&'static str>   why a text query would pin an RDS Proxy connection
//! untracked_settings(statement: &str) -> Vec<String>   what a SET sets that RDS Proxy does not track
//! ```
//!
//! A command is what a client sends to start a round trip: a packet with sequence id 0 once the
//! connection is authenticated (the handshake and its authentication exchange are not commands;
//! they end at the server's first OK or ERR after its greeting, whatever auth switches came
//! between). Its first byte says which: `COM_QUERY` (text protocol; its SQL is kept),
//! `COM_STMT_PREPARE` and `COM_STMT_EXECUTE` (server-side prepared statements), `COM_PING` (the pool
//! pings a connection idle 10 s before lending it), and the others (`COM_STMT_CLOSE`, `COM_QUIT`,
//! `COM_RESET_CONNECTION`, …, of which only the first two have no reply); a debug build's check of
//! a connection it lends is counted apart ([`WireCounts::lend_checks`]). A connection that asks
//! for TLS cannot be read: it is counted in [`WireCounts::encrypted`] and its commands are not;
//! [`WireCounter::url`] turns TLS off for that reason.
//!
//! ```no_run
//! # async fn example(database_url: &str) -> std::io::Result<()> {
//! use flash_sale_local::wire::WireCounter;
//! let wire = WireCounter::in_front_of(database_url).await?;
//! let through_the_proxy = wire.url(database_url);
//! // … connect a pool to `through_the_proxy`, warm it up …
//! wire.take(); // forget the connection's setup
//! // … one operation …
//! let counts = wire.take();
//! assert_eq!(counts.prepares, 0, "{:?}", counts.query_texts);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::mysql::MySqlConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use packets::{ClientHalf, ServerHalf, Stream};
pub use pinning::{pinning, untracked_settings};

pub mod faults;
pub mod latency;
mod packets;
mod pinning;

/// The address of the server a `mysql://` URL names (its host's first address): what the
/// relays here stand in front of.
pub async fn upstream_of(database_url: &str) -> io::Result<SocketAddr> {
    let options = MySqlConnectOptions::from_str(database_url)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address"))
}

/// What clients sent through a [`WireCounter`] since it started or was last taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireCounts {
    /// Client connections accepted.
    pub connections: u64,
    /// Connections that switched to TLS, whose commands could not be read or counted.
    pub encrypted: u64,
    /// Every command, of whatever kind.
    pub commands: u64,
    /// `COM_QUERY`: text protocol.
    pub queries: u64,
    /// `COM_STMT_PREPARE`.
    pub prepares: u64,
    /// `COM_STMT_EXECUTE`.
    pub executes: u64,
    /// `COM_PING`.
    pub pings: u64,
    /// Any other command.
    pub others: u64,
    /// Debug builds' checks that a connection being lent is outside any transaction
    /// (`shared::store::pool::LEND_CHECK`): counted here, not as commands, since release builds
    /// do not send them.
    pub lend_checks: u64,
    /// The SQL of every `COM_QUERY`, in the order sent (invalid UTF-8 replaced).
    pub query_texts: Vec<String>,
}

/// A counting proxy; dropping it closes the listener and every connection through it.
pub struct WireCounter {
    addr: SocketAddr,
    counts: Arc<Mutex<WireCounts>>,
    accepting: JoinHandle<()>,
}

impl WireCounter {
    /// Listens on 127.0.0.1 (a port of its own) and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Mutex::new(WireCounts::default()));
        let accepting = tokio::spawn(accept(listener, upstream, counts.clone()));
        Ok(Self {
            addr,
            counts,
            accepting,
        })
    }

    /// [`WireCounter::start`] in front of the server a `mysql://` URL names (its host's first
    /// address).
    pub async fn in_front_of(database_url: &str) -> io::Result<Self> {
        let upstream = upstream_of(database_url).await?;
        Self::start(upstream).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `database_url` (same user, password, database and options) pointed at this proxy, with
    /// TLS off: an encrypted connection's commands cannot be counted.
    pub fn url(&self, database_url: &str) -> String {
        through(database_url, self.addr)
    }

    pub fn snapshot(&self) -> WireCounts {
        self.lock().clone()
    }

    /// The counts so far; counting starts again from zero.
    pub fn take(&self) -> WireCounts {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WireCounts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        // The accepting task owns the connections' tasks: aborting it ends them all.
        self.accepting.abort();
    }
}

/// `url` with its host and port replaced by `addr`, and `ssl-mode=disabled`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (scheme, rest) = base.split_once("://").unwrap_or(("mysql", base));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(user, _)| format!("{user}@"));
    let options: Vec<&str> = query
        .split('&')
        .filter(|option| !option.is_empty() && !option.starts_with("ssl-mode="))
        .chain(["ssl-mode=disabled"])
        .collect();
    format!("{scheme}://{user}{addr}/{path}?{}", options.join("&"))
}

async fn accept(listener: TcpListener, upstream: SocketAddr, counts: Arc<Mutex<WireCounts>>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                lock(&counts).connections += 1;
                connections.spawn(relay(client, upstream, counts.clone()));
            }
            // Reap finished connections so a long run does not keep them all.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn lock(counts: &Mutex<WireCounts>) -> std::sync::MutexGuard<'_, WireCounts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a connection is: still logging in, logged in (its commands count), or unreadable.
const LOGGING_IN: u8 = 0;
const LOGGED_IN: u8 = 1;
const OPAQUE: u8 = 2;

async fn relay(client: TcpStream, upstream: SocketAddr, counts: Arc<Mutex<WireCounts>>) {
    // Dropping the client's connection is what a client of an unreachable server sees.
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Every packet is a round trip someone waits on: never hold one back to fill a segment.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let phase = Arc::new(AtomicU8::new(LOGGING_IN));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        from_client(client_read, server_write, phase.clone(), counts),
        from_server(server_read, client_write, phase),
    );
}

const BUFFER: usize = 64 * 1024;

async fn from_client(
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    phase: Arc<AtomicU8>,
    counts: Arc<Mutex<WireCounts>>,
) {
    let mut client = ClientHalf::default();
    // Counted before forwarding: the server's answer, and so the client's next command, cannot
    // come before this command is counted.
    forward(from, to, |bytes| match phase.load(Ordering::Acquire) {
        OPAQUE => {}
        phase_now => {
            let logged_in = phase_now == LOGGED_IN;
            if client.feed(bytes, logged_in, &mut lock(&counts)) == Stream::Encrypted {
                phase.store(OPAQUE, Ordering::Release);
                lock(&counts).encrypted += 1;
            }
        }
    })
    .await;
}

async fn from_server(from: OwnedReadHalf, to: OwnedWriteHalf, phase: Arc<AtomicU8>) {
    let mut server = ServerHalf::default();
    // Marked before the OK is forwarded: the client's first command comes after it.
    forward(from, to, |bytes| {
        if phase.load(Ordering::Acquire) == LOGGING_IN && server.feed(bytes) {
            let _ =
                phase.compare_exchange(LOGGING_IN, LOGGED_IN, Ordering::AcqRel, Ordering::Acquire);
        }
    })
    .await;
}

/// Copies one direction of a connection, showing `inspect` each read before it is forwarded,
/// until either side closes.
async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut inspect: impl FnMut(&[u8])) {
    let mut buffer = vec![0; BUFFER];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let bytes = &buffer[..read];
        inspect(bytes);
        if to.write_all(bytes).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_through_the_proxy_keeps_user_database_and_options_and_turns_tls_off() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().expect("an address");
        assert_eq!(
            through("mysql://root@127.0.0.1:3306/flash_sale", addr),
            "mysql://root@127.0.0.1:4321/flash_sale?ssl-mode=disabled"
        );
        assert_eq!(
            through(
                "mysql://u:p%40ss@db.example:3306/t1?ssl-mode=required&x=1",
                addr
            ),
            "mysql://u:p%40ss@127.0.0.1:4321/t1?x=1&ssl-mode=disabled"
        );
        assert_eq!(
            through("mysql://localhost", addr),
            "mysql://127.0.0.1:4321/?ssl-mode=disabled"
        );
    }
}
