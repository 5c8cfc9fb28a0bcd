//! A relay in front of a real MySQL or MariaDB server that, on a test's word, answers as a
//! server (or proxy) of another kind would: with an error packet of its choosing in place of a
//! command's answer, by closing the connection mid-answer, by refusing a login, or by leaving a
//! transaction open on the server as MySQL does when a stored program is killed. It can also run
//! an `InitQuery` on every connection before the client's first command, as RDS Proxy does.
//!
//! ```text
//! FaultRelay::in_front_of(database_url: &str) -> io::Result<FaultRelay>   listens on 127.0.0.1:0
//! FaultRelay::url(&self, database_url: &str) -> String   the same URL, through the relay, TLS off
//! FaultRelay::set_init_query(&self, sql: &str)    statements run after each login (`;`-separated)
//! FaultRelay::arm(&self, fault: Fault)            fires on the next matching command (or login)
//! FaultRelay::fired(&self) -> usize               faults fired so far
//! FaultRelay::connections(&self) -> usize         client connections accepted so far
//! ```
//!
//! Everything else passes through unchanged, byte for byte.

use crate::wire::upstream_of;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::{JoinHandle, JoinSet};

use super::packets::Packets;

const COM_QUERY: u8 = 0x03;

/// When a fault fires.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A `COM_QUERY` whose text contains this.
    QueryContaining(String),
    /// A login the server accepted: the client hears the fault instead of the OK.
    Login,
}

/// What the client hears instead of the server's answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This error packet; the command never reaches the server, the connection stays open.
    Error(ErrorPacket),
    /// This error packet, then the connection closes (MySQL's last word to a killed session).
    ErrorThenClose(ErrorPacket),
    /// The server is sent `START TRANSACTION` instead of the command and the client hears this
    /// error: a stored program killed between its START TRANSACTION and COMMIT, on MySQL, which
    /// runs no handler on a kill and so leaves its transaction open.
    ErrorInsideOpenTransaction(ErrorPacket),
    /// The command reaches the server; its answer is cut after its first few bytes and the
    /// connection closes.
    CutMidAnswer,
}

/// A server error: its number, SQLSTATE and message, as the server would send them.
#[derive(Debug, Clone)]
pub struct ErrorPacket {
    pub number: u16,
    pub sql_state: &'static str,
    pub message: String,
}

impl ErrorPacket {
    pub fn new(number: u16, sql_state: &'static str, message: impl Into<String>) -> Self {
        Self {
            number,
            sql_state,
            message: message.into(),
        }
    }

    /// The packet with sequence id `seq`.
    fn bytes(&self, seq: u8) -> Vec<u8> {
        let mut payload = vec![0xff];
        payload.extend_from_slice(&self.number.to_le_bytes());
        payload.push(b'#');
        payload.extend_from_slice(self.sql_state.as_bytes());
        payload.extend_from_slice(self.message.as_bytes());
        packet(seq, &payload)
    }
}

/// One fault: when, what, and how many times (each firing uses one).
#[derive(Debug, Clone)]
pub struct Fault {
    pub on: Trigger,
    pub answer: Answer,
    pub times: usize,
}

impl Fault {
    /// Fires once, on the next command whose text contains `text`.
    pub fn on_query(text: &str, answer: Answer) -> Self {
        Self {
            on: Trigger::QueryContaining(text.to_owned()),
            answer,
            times: 1,
        }
    }

    pub fn times(self, times: usize) -> Self {
        Self { times, ..self }
    }
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Vec<Fault>>,
    init_query: Mutex<Vec<String>>,
    fired: AtomicUsize,
    connections: AtomicUsize,
}

impl Shared {
    /// Takes one use of the first armed fault that `matches`.
    fn take(&self, matches: impl Fn(&Trigger) -> bool) -> Option<Answer> {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let index = faults.iter().position(|fault| matches(&fault.on))?;
        let answer = faults[index].answer.clone();
        faults[index].times -= 1;
        if faults[index].times == 0 {
            faults.remove(index);
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        Some(answer)
    }
}

/// The relay; dropping it closes the listener and every connection through it.
pub struct FaultRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: JoinHandle<()>,
}

impl FaultRelay {
    pub async fn in_front_of(database_url: &str) -> io::Result<Self> {
        let upstream = upstream_of(database_url).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accepting = tokio::spawn(accept(listener, upstream, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accepting,
        })
    }

    pub fn url(&self, database_url: &str) -> String {
        super::through(database_url, self.addr)
    }

    /// Statements (separated by `;`) run on every connection once its login is accepted, before
    /// the client's first command, their answers kept from the client: RDS Proxy's InitQuery.
    pub fn set_init_query(&self, sql: &str) {
        *self
            .shared
            .init_query
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = sql
            .split(';')
            .map(str::trim)
            .filter(|statement| !statement.is_empty())
            .map(str::to_owned)
            .collect();
    }

    pub fn arm(&self, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(fault);
    }

    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                connections.spawn(relay(client, upstream, shared.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection's two directions, which share what each must tell the other.
struct Connection {
    shared: Arc<Shared>,
    to_client: AsyncMutex<OwnedWriteHalf>,
    to_server: AsyncMutex<OwnedWriteHalf>,
    logged_in: AtomicBool,
    /// Answers of the server's that the client must not see (the InitQuery's, an injected
    /// START TRANSACTION's), each one OK or ERR packet.
    swallow: AtomicUsize,
    /// Cut the next answer short.
    cut: AtomicBool,
}

async fn relay(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let connection = Connection {
        shared,
        to_client: AsyncMutex::new(client_write),
        to_server: AsyncMutex::new(server_write),
        logged_in: AtomicBool::new(false),
        swallow: AtomicUsize::new(0),
        cut: AtomicBool::new(false),
    };
    // Either direction ending ends the connection: both sockets close.
    tokio::select! {
        () = from_client(client_read, &connection) => {}
        () = from_server(server_read, &connection) => {}
    }
}

const BUFFER: usize = 64 * 1024;

async fn from_client(mut from: OwnedReadHalf, connection: &Connection) {
    let mut packets = Packets::default();
    let mut buffer = vec![0; BUFFER];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let mut whole = Vec::new();
        packets.feed(&buffer[..read], |seq, payload| {
            whole.push((seq, payload.to_vec()));
        });
        for (seq, payload) in whole {
            let answer = if connection.logged_in.load(Ordering::SeqCst)
                && seq == 0
                && payload.first() == Some(&COM_QUERY)
            {
                let text = String::from_utf8_lossy(&payload[1..]).into_owned();
                connection.shared.take(|trigger| {
                    matches!(trigger, Trigger::QueryContaining(part) if text.contains(part.as_str()))
                })
            } else {
                None
            };
            let forwarded = match answer {
                None => send(&connection.to_server, &packet(seq, &payload)).await,
                Some(Answer::Error(error)) => send(&connection.to_client, &error.bytes(1)).await,
                Some(Answer::ErrorThenClose(error)) => {
                    let _ = send(&connection.to_client, &error.bytes(1)).await;
                    return;
                }
                Some(Answer::ErrorInsideOpenTransaction(error)) => {
                    connection.swallow.fetch_add(1, Ordering::SeqCst);
                    let begin = [&[COM_QUERY][..], b"START TRANSACTION"].concat();
                    send(&connection.to_server, &packet(0, &begin)).await
                        && send(&connection.to_client, &error.bytes(1)).await
                }
                Some(Answer::CutMidAnswer) => {
                    connection.cut.store(true, Ordering::SeqCst);
                    send(&connection.to_server, &packet(seq, &payload)).await
                }
            };
            if !forwarded {
                return;
            }
        }
    }
}

async fn from_server(mut from: OwnedReadHalf, connection: &Connection) {
    let mut packets = Packets::default();
    let mut buffer = vec![0; BUFFER];
    let mut greeted = false;
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let mut whole = Vec::new();
        packets.feed(&buffer[..read], |seq, payload| {
            whole.push((seq, payload.to_vec()));
        });
        for (seq, payload) in whole {
            let bytes = packet(seq, &payload);
            if !connection.logged_in.load(Ordering::SeqCst) {
                // The greeting, then auth switches and more auth data, until an OK or an ERR.
                let ends_login = std::mem::replace(&mut greeted, true)
                    && matches!(payload.first(), Some(0x00 | 0xff));
                if ends_login && payload.first() == Some(&0x00) {
                    if let Some(answer) = connection.shared.take(|t| matches!(t, Trigger::Login)) {
                        if let Answer::Error(error) | Answer::ErrorThenClose(error) = answer {
                            let _ = send(&connection.to_client, &error.bytes(seq)).await;
                        }
                        return;
                    }
                    if !run_init_query(connection).await {
                        return;
                    }
                    connection.logged_in.store(true, Ordering::SeqCst);
                }
                if !send(&connection.to_client, &bytes).await {
                    return;
                }
                continue;
            }
            if seq == 1
                && matches!(payload.first(), Some(0x00 | 0xff))
                && connection
                    .swallow
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                continue;
            }
            if connection.cut.swap(false, Ordering::SeqCst) {
                let _ = send(&connection.to_client, &bytes[..bytes.len().min(3)]).await;
                return;
            }
            if !send(&connection.to_client, &bytes).await {
                return;
            }
        }
    }
}

/// Sends the InitQuery's statements to the server; their answers are swallowed as they come,
/// before any answer to the client's first command (the server answers in order).
async fn run_init_query(connection: &Connection) -> bool {
    let statements = connection
        .shared
        .init_query
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for statement in statements {
        connection.swallow.fetch_add(1, Ordering::SeqCst);
        let query = [&[COM_QUERY][..], statement.as_bytes()].concat();
        if !send(&connection.to_server, &packet(0, &query)).await {
            return false;
        }
    }
    true
}

async fn send(to: &AsyncMutex<OwnedWriteHalf>, bytes: &[u8]) -> bool {
    to.lock().await.write_all(bytes).await.is_ok()
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut bytes = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    bytes.extend_from_slice(payload);
    bytes
}
